//! [`run`](crate::aws::run) end to end.

use std::time::Duration;

use super::fake::{route, table, Fake, ENI, INSTANCE, REGION};
use super::*;

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
    let (status_tx, status) = watch::channel(AwsStatus::default());
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
    let s = status.borrow();
    assert!(!s.ok && s.message.contains("no lease"), "{s:?}");
}

/// Nothing changes, yet the check comes back every resync period: a route
/// someone deleted by hand is put back.
#[tokio::test]
async fn resync_puts_back_a_deleted_route() {
    let key = key(None);
    let mut st = state(
        true,
        key.clone(),
        vec![table("rtb-main", None, true, vec![])],
    );
    st.source_dest_check = false;
    let fake = Fake::start(st).await;
    let (_desired, desired_rx) = watch::channel(Some(desired(&[])));
    let (status_tx, mut status) = watch::channel(AwsStatus::default());
    let (stop, shutdown) = Shutdown::new();
    let timing = crate::aws::task::Timing {
        resync: Duration::from_millis(300),
        retry: Duration::from_millis(300),
    };
    let task = tokio::spawn(crate::aws::task::run_with(
        settings(&fake, Some(&key)),
        desired_rx,
        status_tx,
        shutdown,
        timing,
    ));
    let within = Duration::from_secs(20);
    tokio::time::timeout(within, status.wait_for(|s| s.ok && s.writes == 1))
        .await
        .unwrap()
        .unwrap();
    fake.state.lock().unwrap().tables[0].routes.clear();
    tokio::time::timeout(within, status.wait_for(|s| s.writes == 2))
        .await
        .expect("the resync puts the route back")
        .unwrap();
    assert_eq!(
        fake.routes("rtb-main"),
        vec![route("10.244.1.0/24", ENI, false)]
    );
    assert_eq!(writes(&fake.calls()), ["CreateRoute", "CreateRoute"]);
    stop.send(true).unwrap();
    task.await.unwrap();
}
