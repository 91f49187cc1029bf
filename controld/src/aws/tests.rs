//! [`run`] end to end against the fake EC2 and metadata service in
//! [`super::fake`], on 127.0.0.1.

use std::time::Duration;

use tokio::sync::watch;

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::creds::Credentials;
use super::fake::{route, table, Fake, State, ENI, INSTANCE, REGION};
use super::http::Http;
use super::imds::Imds;
use super::sigv4::Key;
use super::{run, AwsStatus, Desired, Settings};
use crate::event::Shutdown;

const SECRET: &str = "sEcReTkEyNeVeRlOgGeD";

fn key(token: Option<&str>) -> Key {
    Key {
        access_key_id: "AKIDTEST".into(),
        secret_access_key: SECRET.into(),
        session_token: token.map(str::to_string),
    }
}

fn state(imds_v2: bool, key: Key, tables: Vec<super::fake::FakeTable>) -> State {
    State {
        imds_v2,
        token_hangs: false,
        role_ttl: Duration::from_secs(3600),
        role_fetches: 0,
        key,
        private_ip: "10.0.1.5".into(),
        source_dest_check: true,
        tables,
        throttle: 0,
        calls: Vec::new(),
        token_puts: 0,
        gets_with_token: 0,
        gets_without_token: 0,
        refused: Vec::new(),
    }
}

fn desired(tables: &[&str]) -> Desired {
    Desired {
        network: "10.244.0.0/16".parse().unwrap(),
        subnet: "10.244.1.0/24".parse().unwrap(),
        public_ip: "10.0.1.5".parse().unwrap(),
        route_tables: tables.iter().map(|s| s.to_string()).collect(),
    }
}

struct Running {
    desired: watch::Sender<Option<Desired>>,
    status: watch::Receiver<AwsStatus>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(settings: Settings, want: Desired) -> Running {
    let (desired, desired_rx) = watch::channel(Some(want));
    let (status_tx, status) = watch::channel(AwsStatus::default());
    let (stop, shutdown) = Shutdown::new();
    let task = tokio::spawn(run(settings, desired_rx, status_tx, shutdown));
    Running {
        desired,
        status,
        stop,
        task,
    }
}

impl Running {
    /// Waits (up to 20 s) for a status that passes `f`.
    async fn until(&mut self, what: &str, f: impl Fn(&AwsStatus) -> bool) -> AwsStatus {
        let got = tokio::time::timeout(Duration::from_secs(20), self.status.wait_for(|s| f(s)))
            .await
            .map(|r| r.map(|s| s.clone()));
        match got {
            Ok(Ok(s)) => s,
            _ => panic!("{what}: status is {:?}", *self.status.borrow()),
        }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("run stops at shutdown")
            .unwrap();
    }
}

fn settings(fake: &Fake, key: Option<&Key>) -> Settings {
    Settings {
        access_key_id: key.map(|k| k.access_key_id.clone()),
        secret_access_key: key.map(|k| k.secret_access_key.clone()),
        session_token: key.and_then(|k| k.session_token.clone()),
        region: None,
        endpoint: Some(fake.url()),
        metadata_endpoint: fake.url(),
    }
}

/// Waits until the fake has seen `n` calls of `action`, then a little
/// longer for anything that would follow.
async fn seen(fake: &Fake, action: &str, n: usize) {
    for _ in 0..200 {
        if fake.calls().iter().filter(|c| *c == action).count() >= n {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{action} not seen {n} times: {:?}", fake.calls());
}

const WRITES: [&str; 4] = [
    "CreateRoute",
    "ReplaceRoute",
    "DeleteRoute",
    "ModifyNetworkInterfaceAttribute",
];

fn writes(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| WRITES.contains(&c.as_str()))
        .cloned()
        .collect()
}

/// IMDSv2, environment key, the table found by the interface's subnet:
/// a throttled call retried, our route pointing elsewhere replaced, a dead
/// host's blackhole removed, another host's route kept; then a second
/// check with all right writes nothing.
#[tokio::test]
async fn imds_v2_subnet_table_throttled_blackhole_then_nothing() {
    let key = key(None);
    let mut st = state(
        true,
        key.clone(),
        vec![
            table(
                "rtb-main",
                None,
                true,
                vec![route("10.244.9.0/24", "eni-x", true)],
            ),
            table(
                "rtb-sub",
                Some("subnet-1"),
                false,
                vec![
                    route("10.244.1.0/24", "eni-old", false),
                    route("10.244.2.0/24", "eni-other", false),
                    route("10.244.7.0/24", "eni-dead", true),
                    route("172.16.0.0/24", "eni-dead", true),
                ],
            ),
        ],
    );
    st.throttle = 1;
    let fake = Fake::start(st).await;
    let mut r = start(settings(&fake, Some(&key)), desired(&[]));

    let s = r.until("first check", |s| s.ok).await;
    assert_eq!(s.instance_id, INSTANCE);
    assert_eq!(s.region, REGION, "from instance metadata");
    assert_eq!(
        s.interface_id, ENI,
        "the interface holding PublicIP, not the primary"
    );
    assert_eq!(s.tables, vec!["rtb-sub".to_string()]);
    assert_eq!(s.writes, 3);
    assert!(s.checked_unix > 0 && s.message.is_empty());

    let calls = fake.calls();
    assert_eq!(
        calls[0..2],
        ["DescribeInstances", "DescribeInstances"],
        "throttled, retried: {calls:?}"
    );
    assert_eq!(
        writes(&calls),
        [
            "ModifyNetworkInterfaceAttribute",
            "DeleteRoute",
            "ReplaceRoute"
        ],
        "{calls:?}"
    );
    assert_eq!(
        fake.routes("rtb-sub"),
        vec![
            route("10.244.1.0/24", ENI, false),
            route("10.244.2.0/24", "eni-other", false),
            route("172.16.0.0/24", "eni-dead", true),
        ]
    );
    // The main table is not ours when the subnet has its own.
    assert_eq!(
        fake.routes("rtb-main"),
        vec![route("10.244.9.0/24", "eni-x", true)]
    );
    {
        let st = fake.state.lock().unwrap();
        assert!(st.refused.is_empty(), "{:?}", st.refused);
        assert_eq!(st.token_puts, 1, "one token for every metadata call");
        assert_eq!((st.gets_with_token > 0, st.gets_without_token), (true, 0));
        assert!(!st.source_dest_check);
    }

    // The same again (the state task resends on every lease event): a full
    // check that finds everything right and writes nothing.
    let before = fake.calls().len();
    r.desired.send_replace(Some(desired(&[])));
    seen(&fake, "DescribeInstances", 3).await;
    let again = fake.calls()[before..].to_vec();
    assert_eq!(
        again,
        ["DescribeInstances", "DescribeRouteTables"],
        "{again:?}"
    );
    let s = r.status.borrow().clone();
    assert!(s.ok && s.writes == 3, "{s:?}");
    r.stop().await;
}

/// IMDSv1 only (the token call answers 405), the instance role's key with
/// its session token, RouteTableID given: one table right, one missing
/// our route; the main table is not looked at.
#[tokio::test]
async fn imds_v1_fallback_role_credentials_given_tables() {
    let key = key(Some("SeSsIoNtOkEn"));
    let mut st = state(
        false,
        key.clone(),
        vec![
            table(
                "rtb-a",
                None,
                false,
                vec![route("10.244.1.0/24", ENI, false)],
            ),
            table("rtb-b", None, false, vec![]),
            table("rtb-main", None, true, vec![]),
        ],
    );
    st.source_dest_check = false;
    let fake = Fake::start(st).await;
    let mut r = start(settings(&fake, None), desired(&["rtb-a", "rtb-b"]));

    let s = r.until("check", |s| s.ok).await;
    assert_eq!(s.tables, vec!["rtb-a".to_string(), "rtb-b".to_string()]);
    assert_eq!(s.writes, 1);
    assert_eq!(
        writes(&fake.calls()),
        ["CreateRoute"],
        "source/dest check already off"
    );
    assert_eq!(
        fake.routes("rtb-b"),
        vec![route("10.244.1.0/24", ENI, false)]
    );
    assert_eq!(fake.routes("rtb-main"), vec![]);
    {
        let st = fake.state.lock().unwrap();
        assert!(st.refused.is_empty(), "{:?}", st.refused);
        assert_eq!(st.token_puts, 1, "refused once, not asked again");
        assert_eq!((st.gets_with_token, st.gets_without_token > 0), (0, true));
    }
    r.stop().await;
}

/// Errors: a RouteTableID AWS does not know, then a full table. Each gives
/// a status line with AWS's code and what to do, never the secret, and the
/// task goes on: fixed, the next check is right.
#[tokio::test]
async fn wrong_table_and_full_table_are_reported_and_retried() {
    let key = key(None);
    let mut full = table(
        "rtb-full",
        None,
        true,
        vec![route("10.244.2.0/24", "eni-other", false)],
    );
    full.limit = 1;
    let fake = Fake::start(state(true, key.clone(), vec![full])).await;
    let mut set = settings(&fake, Some(&key));
    set.region = Some(REGION.into());
    let mut r = start(set, desired(&["rtb-nope"]));

    let s = r
        .until("unknown table", |s| !s.ok && !s.message.is_empty())
        .await;
    assert!(
        s.message.contains("InvalidRouteTableID.NotFound"),
        "{}",
        s.message
    );
    assert!(s.message.contains("rtb-nope"), "{}", s.message);
    assert!(!s.message.contains(SECRET));

    // The main table, which has room for no more route.
    r.desired.send_replace(Some(desired(&[])));
    let s = r
        .until("full table", |s| s.message.contains("RouteLimitExceeded"))
        .await;
    assert!(!s.ok);
    assert!(s.message.contains("table rtb-full"), "{}", s.message);
    assert!(
        s.message.contains("table is full") && s.message.contains("50 routes"),
        "{}",
        s.message
    );
    assert!(!s.message.contains(SECRET));
    // Only the source/destination check was written.
    assert_eq!(s.writes, 1);

    // Room made (a quota raised): the next check puts the route in.
    fake.state.lock().unwrap().tables[0].limit = 50;
    r.desired.send_replace(Some(desired(&[])));
    let s = r.until("fixed", |s| s.ok).await;
    assert_eq!(s.writes, 2);
    assert!(fake
        .routes("rtb-full")
        .contains(&route("10.244.1.0/24", ENI, false)));
    assert!(fake.state.lock().unwrap().refused.is_empty());
    r.stop().await;
}

/// Nothing wanted (no lease yet, another backend): no call at all.
#[tokio::test]
async fn none_wanted_makes_no_call() {
    let fake = Fake::start(state(true, key(None), vec![])).await;
    let (_desired, desired_rx) = watch::channel(None);
    let (status_tx, _status) = watch::channel(AwsStatus::default());
    let (stop, shutdown) = Shutdown::new();
    let task = tokio::spawn(run(
        settings(&fake, Some(&key(None))),
        desired_rx,
        status_tx,
        shutdown,
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let st = fake.state.lock().unwrap();
    assert_eq!((st.calls.len(), st.token_puts), (0, 0));
}

/// Everything logged (debug and up) while the guard lives, on this thread:
/// `#[tokio::test]` runs its tasks on the test's thread.
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = Buf(buf.clone());
    let sub = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    (buf, tracing::subscriber::set_default(sub))
}

/// The logs say what was written where, and hold no secret, token or
/// signature, at debug level too.
#[tokio::test]
async fn logs_name_the_writes_and_no_secret() {
    let (logs, _guard) = capture_logs();
    let key = key(Some("SeSsIoNtOkEn"));
    let mut st = state(
        true,
        key.clone(),
        vec![table(
            "rtb-sub",
            Some("subnet-1"),
            false,
            vec![route("10.244.7.0/24", "eni-dead", true)],
        )],
    );
    st.throttle = 1;
    let fake = Fake::start(st).await;
    let mut r = start(settings(&fake, None), desired(&[]));
    r.until("check", |s| s.ok).await;
    r.stop().await;
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    for line in [
        "route created table=\"rtb-sub\" destination=10.244.1.0/24 target=\"eni-0me\"",
        "blackhole route deleted table=\"rtb-sub\" destination=10.244.7.0/24 was=eni-dead",
        "source/destination check turned off interface=eni-0me",
        "credentials=\"instance role\"",
        "RequestLimitExceeded",
    ] {
        assert!(logs.contains(line), "no {line:?} in:\n{logs}");
    }
    for secret in [SECRET, "SeSsIoNtOkEn", "Signature=", super::fake::TOKEN] {
        assert!(!logs.contains(secret), "{secret:?} logged:\n{logs}");
    }
}

/// The role's key is kept while it holds and fetched again within five
/// minutes of its Expiration.
#[tokio::test]
async fn role_key_cached_then_refreshed_before_expiry() {
    let fake = Fake::start(state(true, key(Some("t")), vec![])).await;
    let imds = Arc::new(Imds::new(&fake.url(), Http::default()).unwrap());
    let creds = Credentials::new(None, None, None, imds);
    assert_eq!(creds.key().await.unwrap(), key(Some("t")));
    creds.key().await.unwrap();
    assert_eq!(fake.state.lock().unwrap().role_fetches, 1, "cached");

    // Four minutes left: inside the refresh margin, so every call asks.
    fake.state.lock().unwrap().role_ttl = Duration::from_secs(240);
    creds.forget().await;
    creds.key().await.unwrap();
    creds.key().await.unwrap();
    assert_eq!(fake.state.lock().unwrap().role_fetches, 3);

    // The environment's key never asks metadata.
    let imds = Arc::new(Imds::new(&fake.url(), Http::default()).unwrap());
    let env = Credentials::new(Some("AKID".into()), Some("s".into()), None, imds);
    assert_eq!(env.key().await.unwrap().access_key_id, "AKID");
    assert_eq!(fake.state.lock().unwrap().role_fetches, 3);
}

/// A token call that never answers: IMDSv1 after the timeout.
#[tokio::test]
async fn imds_token_timeout_falls_back_to_v1() {
    let mut st = state(true, key(None), vec![]);
    st.token_hangs = true;
    let fake = Fake::start(st).await;
    let imds = Imds::new(&fake.url(), Http::default()).unwrap();
    assert_eq!(
        imds.get("/latest/meta-data/instance-id").await.unwrap(),
        INSTANCE
    );
    assert_eq!(
        imds.get("/latest/meta-data/placement/region")
            .await
            .unwrap(),
        REGION
    );
    let st = fake.state.lock().unwrap();
    assert_eq!((st.token_puts, st.gets_without_token), (1, 2));
}
