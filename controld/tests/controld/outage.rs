//! etcd and dataplane outages, compaction, TLS and auth.

use std::time::Duration;

use ipnet::Ipv4Net;

use crate::common::{self, wait_for, Etcd, Host, TempDir};
use crate::{net, NET16};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_keeps_state_and_recovers() {
    let mut etcd = Etcd::start().await;
    // Away from the fake peer's key (a plain put) below.
    etcd.put_config(r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.100.0"}"#)
        .await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    let b = Host::start(&etcd, "198.18.0.2", true).await;
    let sa = a.ready().await;
    b.ready().await;
    wait_for(Duration::from_secs(5), "A sees B", || async {
        a.routes().len() == 1
    })
    .await;
    let generation = a.status().await.generation;

    etcd.stop();
    wait_for(
        Duration::from_secs(30),
        "etcd unreachable in status",
        || async { !a.status().await.etcd_reachable },
    )
    .await;
    let st = a.status().await;
    assert_eq!(
        st.generation, generation,
        "no snapshot change while etcd is down"
    );
    assert_eq!(a.routes().len(), 1);

    etcd.restart().await;
    wait_for(Duration::from_secs(30), "etcd reachable again", || async {
        a.status().await.etcd_reachable
    })
    .await;
    assert_eq!(a.subnet().await, Some(sa));
    // The watch resumed: a new peer shows up.
    etcd.fake_peer("10.50.77.0/24", r#"{"PublicIP":"198.18.0.77"}"#)
        .await;
    wait_for(
        Duration::from_secs(10),
        "new peer after the outage",
        || async { a.routes().contains(&net("10.50.77.0/24")) },
    )
    .await;
}

/// A controld started while etcd is down (a host booting before its etcd)
/// keeps trying: its first calls fail and time out, and once etcd is up it
/// claims a lease and gets ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_at_start_then_up() {
    let mut etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    etcd.stop();
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    // Past the first connect failure and one call timeout (5 s).
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(a.subnet().await.is_none(), "a lease without etcd");
    assert!(!a.status().await.etcd_reachable);
    etcd.restart().await;
    a.ready().await;
    assert!(a.status().await.etcd_reachable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_dataplane_no_subnet_env_then_push_on_connect() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let mut a = Host::start(&etcd, "198.18.0.1", false).await;
    wait_for(Duration::from_secs(10), "lease claimed", || async {
        a.subnet().await.is_some()
    })
    .await;
    let st = a.status().await;
    assert_eq!(st.phase, "waiting-for-dataplane");
    assert!(!st.dataplane_connected);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        a.subnet_env().is_none(),
        "subnet.env only after the dataplane applied"
    );

    // The dataplane comes up: the current snapshot arrives, then subnet.env.
    a.dp = Some(common::FakeDataplane::start(a.dir.path()).await);
    a.ready().await;
    assert_eq!(a.status().await.phase, "running");

    // A dataplane restart gets the current snapshot again.
    let before = a.dp.as_ref().unwrap().rec.last().unwrap();
    a.dp.take().unwrap().stop().await;
    a.dp = Some(common::FakeDataplane::start(a.dir.path()).await);
    wait_for(Duration::from_secs(5), "snapshot re-sent", || async {
        a.dp.as_ref().unwrap().rec.last().is_some()
    })
    .await;
    assert_eq!(a.dp.as_ref().unwrap().rec.last().unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resuming_from_a_compacted_revision_lists_again() {
    use kolach_controld::etcd::{EtcdOptions, Registry};
    use kolach_controld::event::{Event, Shutdown};

    let etcd = Etcd::start().await;
    let peer = r#"{"PublicIP":"198.18.0.1"}"#;
    etcd.fake_peer("10.50.1.0/24", peer).await;
    let resume = etcd
        .client()
        .await
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
        + 1;
    // Changes the watch would have to see: a delete and a put...
    etcd.delete_subnet(net("10.50.1.0/24")).await;
    etcd.fake_peer("10.50.2.0/24", r#"{"PublicIP":"198.18.0.2"}"#)
        .await;
    // ...but their history is compacted away.
    let mut c = etcd.client().await;
    let now = c.get("x", None).await.unwrap().header().unwrap().revision();
    c.compact(now, None).await.unwrap();

    let reg = Registry::connect(&EtcdOptions {
        endpoints: vec![etcd.url.clone()],
        prefix: common::PREFIX.into(),
        ..EtcdOptions::default()
    })
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop) = Shutdown::new();
    let task = tokio::spawn(kolach_controld::etcd::watcher::subnets_from(
        reg,
        tx,
        stop,
        Some(resume),
    ));
    let listing = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rx.recv().await.unwrap() {
                Event::Listed(l) => return l,
                Event::Subnet(e) => panic!("event from a compacted history: {e:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("a fresh listing");
    let subnets: Vec<Ipv4Net> = listing.leases.iter().map(|l| l.subnet).collect();
    assert_eq!(subnets, vec![net("10.50.2.0/24")]);
    assert!(listing.revision >= now);
    let _ = stop_tx.send(true);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let etcd = Etcd::start_with(true).await;
    etcd.put_config(NET16).await;
    let t = etcd.tls().unwrap().clone();
    let (ca, cert, key) = (
        t.ca.display().to_string(),
        t.client_cert.display().to_string(),
        t.client_key.display().to_string(),
    );
    let extra = [
        "--etcd-cafile",
        ca.as_str(),
        "--etcd-certfile",
        cert.as_str(),
        "--etcd-keyfile",
        key.as_str(),
    ];
    let a = Host::start_in(
        &etcd,
        std::sync::Arc::new(TempDir::new("tls")),
        "198.18.0.1",
        true,
        &extra,
    )
    .await;
    a.ready().await;
    assert!(a.status().await.etcd_reachable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let mut c = etcd.client().await;
    c.user_add("root", "s3cret", None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.auth_enable().await.unwrap();
    let extra = ["--etcd-username", "root", "--etcd-password", "s3cret"];
    let a = Host::start_in(
        &etcd,
        std::sync::Arc::new(TempDir::new("auth")),
        "198.18.0.1",
        true,
        &extra,
    )
    .await;
    a.ready().await;
    // A wrong password is retried, never fatal, and shows in the status.
    let bad = ["--etcd-username", "root", "--etcd-password", "wrong"];
    let b = Host::start_in(
        &etcd,
        std::sync::Arc::new(TempDir::new("auth")),
        "198.18.0.2",
        true,
        &bad,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = b.status().await;
    assert!(!st.etcd_reachable);
    assert_eq!(st.phase, "waiting-for-etcd");
}
