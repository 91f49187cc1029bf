//! The clients' parts that need a server: credentials, metadata, logs;
//! and the error lines.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::fake::{route, table, Fake, INSTANCE, REGION};
use super::*;
use crate::aws::creds::Credentials;
use crate::aws::http::Http;
use crate::aws::imds::Imds;

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
    for secret in [SECRET, "SeSsIoNtOkEn", "Signature=", fake::TOKEN] {
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

/// Which errors are retried within a check, and the lines people read.
#[test]
fn error_kinds_and_lines() {
    let api = |status: u16, code: &str| crate::aws::AwsError::Api {
        action: "CreateRoute".into(),
        status,
        code: code.into(),
        message: "m".into(),
        request_id: "r".into(),
    };
    for (status, code) in [
        (503, "RequestLimitExceeded"),
        (400, "Throttling"),
        (500, "InternalError"),
        (502, "HTTP502"),
    ] {
        assert!(api(status, code).retryable(), "{code}");
    }
    for code in [
        "AuthFailure",
        "SignatureDoesNotMatch",
        "InvalidRouteTableID.NotFound",
        "RouteLimitExceeded",
        "UnauthorizedOperation",
    ] {
        assert!(!api(400, code).retryable(), "{code}");
    }
    assert!(crate::aws::AwsError::Timeout("t".into()).retryable());
    assert!(!crate::aws::AwsError::Setup("s".into()).retryable());
    let full = api(400, "RouteLimitExceeded").to_string();
    assert!(
        full.starts_with("CreateRoute: RouteLimitExceeded: m (the route table is full"),
        "{full}"
    );
    assert!(
        full.contains("50 routes per table") && full.contains("higher"),
        "{full}"
    );
    assert!(api(403, "AuthFailure")
        .to_string()
        .contains("instance role"));
    assert!(api(400, "RequestExpired").to_string().contains("clock"));
}

#[test]
fn settings_debug_hides_the_secret_and_the_token() {
    let s = crate::aws::Settings {
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
        session_token: Some("token-xyz".into()),
        ..Default::default()
    };
    let shown = format!("{s:?}");
    assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
    assert!(
        !shown.contains("EXAMPLEKEY") && !shown.contains("token-xyz"),
        "{shown}"
    );
}
