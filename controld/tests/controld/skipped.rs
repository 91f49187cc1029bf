//! Leases this host does not route to (another backend, a vxlan lease
//! without a VtepMAC): skipped, reported in status, logged once each.

use std::time::Duration;

use crate::backends::{mac, routes, value};
use crate::common::{self, wait_for, Etcd, Host, TempDir};
use crate::net;

/// Configs whose hosts claim subnets away from the fake peers' (below .100).
const AWAY_VXLAN: &str =
    r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.100.0","Backend":{"Type":"vxlan"}}"#;
const AWAY_UDP: &str = r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.100.0"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_of_another_backend_are_ignored_and_reported() {
    let etcd = Etcd::start().await;
    // This host claims from 10.50.100.0 up: the fake peers' keys below are
    // plain puts and must never land on its key.
    etcd.put_config(AWAY_VXLAN).await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    a.ready().await;
    etcd.fake_peer("10.50.7.0/24", &value("198.18.0.7", "udp"))
        .await;
    etcd.fake_peer("10.50.8.0/24", &value("198.18.0.8", "vxlan"))
        .await;
    etcd.fake_peer("10.50.9.0/24", &value("198.18.0.9", "host-gw"))
        .await;
    etcd.fake_peer(
        "10.50.10.0/24",
        r#"{"PublicIP":"198.18.0.10","BackendType":"vxlan","BackendData":null}"#,
    )
    .await;
    let other = "2 leases of another backend ignored: 10.50.7.0/24 (udp), 10.50.9.0/24 (host-gw)";
    let no_mac = "1 vxlan lease without a valid VtepMAC not routed: 10.50.10.0/24 (198.18.0.10)";
    wait_for(Duration::from_secs(5), "routes and warnings", || async {
        let w = a.status().await.warnings;
        a.snapshot()
            .is_some_and(|s| routes(&s) == vec![(net("10.50.8.0/24"), mac(8))])
            && w.iter().any(|x| x == other)
            && w.iter().any(|x| x == no_mac)
    })
    .await;
    assert_eq!(a.status().await.peer_count, 1);
    // Unrelated events do not repeat the report.
    for i in 20..25 {
        etcd.fake_peer(
            &format!("10.50.{i}.0/24"),
            &value(&format!("198.18.0.{i}"), "vxlan"),
        )
        .await;
    }
    wait_for(Duration::from_secs(5), "6 peers", || async {
        a.status().await.peer_count == 6
    })
    .await;
    // Each standing warning once; no per-lease or per-event entries.
    assert_eq!(a.status().await.warnings, [other, no_mac]);

    // The udp peer switches to vxlan, the host-gw one leaves.
    etcd.fake_peer("10.50.7.0/24", &value("198.18.0.7", "vxlan"))
        .await;
    etcd.delete_subnet(net("10.50.9.0/24")).await;
    wait_for(Duration::from_secs(5), "former udp peer routed", || async {
        a.snapshot()
            .is_some_and(|s| routes(&s).contains(&(net("10.50.7.0/24"), mac(7))))
    })
    .await;
    wait_for(Duration::from_secs(5), "backend warning gone", || async {
        a.status().await.warnings == [no_mac]
    })
    .await;
}

/// The real binary logs each ignored lease once, not on every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ignored_lease_is_logged_once() {
    let etcd = Etcd::start().await;
    etcd.put_config(AWAY_UDP).await;
    let dir = TempDir::new("bin-skip");
    let dp = common::FakeDataplane::start(dir.path()).await;
    let env_file = dir.path().join("subnet.env");
    let log = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kolach-controld"))
        .env("KOLACH_ETCD_ENDPOINTS", &etcd.url)
        .env("KOLACH_IFACE", "lo")
        .env("KOLACH_PUBLIC_IP", "198.18.0.1")
        .env("KOLACH_RUN_DIR", dir.path())
        .env("KOLACH_SUBNET_FILE", &env_file)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(15), "subnet.env", || {
        let f = env_file.clone();
        async move { f.exists() }
    })
    .await;
    etcd.fake_peer("10.50.7.0/24", &value("198.18.0.7", "vxlan"))
        .await;
    // Twenty events after it: puts of udp peers and rewrites of the same key.
    for i in 0..10 {
        etcd.fake_peer(
            &format!("10.50.{}.0/24", 20 + i),
            &value(&format!("198.18.0.{}", 20 + i), "udp"),
        )
        .await;
    }
    for _ in 0..10 {
        etcd.fake_peer("10.50.7.0/24", &value("198.18.0.7", "vxlan"))
            .await;
    }
    wait_for(Duration::from_secs(10), "10 peers routed", || async {
        dp.rec.last().is_some_and(|s| s.routes.len() == 10)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ignoring a lease of another backend"))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    for field in [
        "subnet=10.50.7.0/24",
        "public_ip=198.18.0.7",
        "backend=vxlan",
        "ours=udp",
    ] {
        assert!(lines[0].contains(field), "{field} in {}", lines[0]);
    }
    dp.stop().await;
}
