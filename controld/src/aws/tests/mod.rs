//! The aws-vpc backend against a fake EC2 and instance metadata service on
//! 127.0.0.1 ([`fake`], [`fake_ec2`]): [`run`] end to end ([`end_to_end`]),
//! and the clients' parts that need a server ([`parts`]).

mod end_to_end;
mod fake;
mod fake_ec2;
mod parts;

use std::time::Duration;

use tokio::sync::watch;

use crate::aws::sigv4::Key;
use crate::aws::{run, AwsStatus, Desired, Settings};
use crate::event::Shutdown;
use fake::{Fake, State};

const SECRET: &str = "sEcReTkEyNeVeRlOgGeD";

fn key(token: Option<&str>) -> Key {
    Key {
        access_key_id: "AKIDTEST".into(),
        secret_access_key: SECRET.into(),
        session_token: token.map(str::to_string),
    }
}

fn state(imds_v2: bool, key: Key, tables: Vec<fake::FakeTable>) -> State {
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
