//! Config changes: invalid ones change nothing, valid ones apply live or move the host.

use std::time::Duration;

use crate::common::{wait_for, Etcd, Host};
use crate::{net, NET16};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_changes_nothing_and_a_valid_change_applies_live() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    let b = Host::start(&etcd, "198.18.0.2", true).await;
    let sa = a.ready().await;
    b.ready().await;
    wait_for(Duration::from_secs(5), "A sees B", || async {
        a.routes().len() == 1
    })
    .await;
    let before = a.status().await;
    let pushes = a.dp.as_ref().unwrap().rec.count();
    let keys = etcd.subnets().await;

    etcd.put_config(r#"{"Network":"10.50.0.0/16","SubnetLen":40}"#)
        .await;
    wait_for(Duration::from_secs(5), "config error in status", || async {
        a.status().await.config_error
            == "config: SubnetLen 40 is not in 18..=30 for Network 10.50.0.0/16"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = a.status().await;
    assert_eq!(after.generation, before.generation);
    assert_eq!(after.subnet, before.subnet);
    assert_eq!(after.phase, "running");
    assert_eq!(
        a.dp.as_ref().unwrap().rec.count(),
        pushes,
        "no snapshot pushed"
    );
    let keys_after = etcd.subnets().await;
    assert_eq!(
        keys.iter().map(|k| (k.0, k.1.clone())).collect::<Vec<_>>(),
        keys_after
            .iter()
            .map(|k| (k.0, k.1.clone()))
            .collect::<Vec<_>>()
    );
    let json_error = r#"{"Network":"10.50.0.0/16""#;
    etcd.put_config(json_error).await;
    wait_for(Duration::from_secs(5), "JSON error in status", || async {
        a.status()
            .await
            .config_error
            .starts_with("config: not valid JSON")
    })
    .await;

    // A valid change that keeps the subnet: applied live.
    etcd.put_config(r#"{"Network":"10.50.0.0/16","Backend":{"Type":"udp","Port":9000}}"#)
        .await;
    wait_for(Duration::from_secs(5), "new port pushed", || async {
        a.dp.as_ref()
            .unwrap()
            .rec
            .last()
            .unwrap()
            .backend
            .unwrap()
            .port
            == 9000
    })
    .await;
    let st = a.status().await;
    assert!(st.config_error.is_empty());
    // Fixed is fixed: no warning about the broken configs lingers.
    assert!(
        st.warnings
            .iter()
            .all(|w| !w.starts_with("config: not valid JSON")),
        "{:?}",
        st.warnings
    );
    assert_eq!(a.subnet().await, Some(sa));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_invalidates_the_subnet_moves_the_host() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    let old = a.ready().await;
    etcd.put_config(r#"{"Network":"10.60.0.0/16","SubnetLen":26}"#)
        .await;
    wait_for(Duration::from_secs(10), "subnet.env rewritten", || async {
        a.subnet_env()
            .is_some_and(|e| e.contains("KOLACH_NETWORK=10.60.0.0/16"))
    })
    .await;
    let new = a.subnet().await.unwrap();
    assert!(net("10.60.0.0/16").contains(&new) && new.prefix_len() == 26);
    let keys = etcd.subnets().await;
    assert!(
        !keys.iter().any(|(s, _, _)| *s == old),
        "old lease released"
    );
    assert_eq!(keys.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_config_waits_then_claims() {
    let etcd = Etcd::start().await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    wait_for(Duration::from_secs(5), "waiting-for-config", || async {
        let s = a.status().await;
        s.phase == "waiting-for-config" && s.config_error.contains("does not exist")
    })
    .await;
    assert!(etcd.subnets().await.is_empty());
    etcd.put_config(NET16).await;
    a.ready().await;
    assert!(a.status().await.config_error.is_empty());
}
