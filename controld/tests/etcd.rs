//! controld against a real etcd (/usr/bin/etcd on loopback): claiming,
//! restarts, reservations, races, config changes, lost leases, outages.
//! Hosts use `--iface lo --public-ip 198.18.0.x`; no packets are sent.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{wait_for, Etcd, Host, TempDir};
use ipnet::Ipv4Net;

const NET16: &str = r#"{"Network":"10.50.0.0/16"}"#;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_claim_different_subnets_and_route_to_each_other() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    let b = Host::start(&etcd, "198.18.0.2", true).await;
    let sa = a.ready().await;
    let sb = b.ready().await;
    assert_ne!(sa, sb);
    assert!(net("10.50.0.0/16").contains(&sa) && sa.prefix_len() == 24);
    assert_ne!(
        sa,
        net("10.50.0.0/24"),
        "SubnetMin defaults to the second subnet"
    );

    // subnet.env per the contract (lo's MTU is 65536; udp takes 28).
    let env = a.subnet_env().unwrap();
    assert_eq!(
        env,
        format!(
            "KOLACH_NETWORK=10.50.0.0/16\nKOLACH_SUBNET={}/24\nKOLACH_MTU=65508\nKOLACH_IPMASQ=false\n",
            std::net::Ipv4Addr::from(u32::from(sa.network()) + 1)
        )
    );

    wait_for(Duration::from_secs(5), "A routes to B", || async {
        a.routes() == vec![sb]
    })
    .await;
    wait_for(Duration::from_secs(5), "B routes to A", || async {
        b.routes() == vec![sa]
    })
    .await;

    let snap = a.dp.as_ref().unwrap().rec.last().unwrap();
    assert_eq!(snap.mtu, 65508);
    assert_eq!(snap.iface, "lo");
    assert_eq!(snap.backend.unwrap().port, 8285);
    assert_eq!(
        Ipv4Net::try_from(snap.local_subnet.as_ref().unwrap()).unwrap(),
        sa
    );
    let v = snap.version.unwrap();
    assert!(v.epoch > 0 && v.generation >= 1 && v.etcd_revision > 0);

    // The keys hold flannel's JSON, attached to etcd leases.
    let keys = etcd.subnets().await;
    let (_, value, lease) = keys.iter().find(|(s, _, _)| *s == sa).unwrap();
    assert_eq!(
        value,
        r#"{"PublicIP":"198.18.0.1","BackendType":"udp","BackendData":null}"#
    );
    assert_ne!(*lease, 0);

    let st = a.status().await;
    assert_eq!(st.phase, "running");
    assert!(st.etcd_reachable && st.dataplane_connected);
    assert_eq!(st.backend, "udp");
    assert_eq!(st.mtu, 65508);
    assert_eq!(st.iface, "lo");
    assert_eq!(st.peer_count, 1);
    assert!(!st.reservation);
    assert!(st.applied_generation >= 1 && st.applied_generation <= st.generation);
    assert!(st.config_error.is_empty());
    assert!(st.watched_revision > 0);
    wait_for(
        Duration::from_secs(10),
        "keepalive TTL in status",
        || async {
            let t = a.status().await.lease_ttl_seconds;
            t > 20 && t <= 30
        },
    )
    .await;

    let leases = a.leases().await;
    assert_eq!(leases.leases.len(), 2);
    let me = leases.leases.iter().find(|l| l.is_self).unwrap();
    assert_eq!(Ipv4Net::try_from(me.subnet.as_ref().unwrap()).unwrap(), sa);
    assert!(me.expires_in_seconds > 0 && me.expires_in_seconds <= 30);
    assert_eq!(me.backend_type, "udp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_gets_the_same_subnet() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    let first = a.ready().await;
    let dir = a.stop().await;

    // Same host again: its lease (by PublicIP) is still there.
    std::fs::remove_file(dir.path().join("subnet.env")).unwrap();
    let a = Host::start_in(&etcd, dir.clone(), "198.18.0.1", true, &[]).await;
    assert_eq!(a.ready().await, first);
    assert_eq!(etcd.subnets().await.len(), 1, "no second lease");
    let dir = a.stop().await;

    // Lease gone (expired) and a new PublicIP: subnet.env still brings it back.
    etcd.delete_subnet(first).await;
    let a = Host::start_in(&etcd, dir, "198.18.0.9", true, &[]).await;
    assert_eq!(a.ready().await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_are_honoured() {
    let etcd = Etcd::start().await;
    etcd.put_config(
        r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.1.0","SubnetMax":"10.50.2.0"}"#,
    )
    .await;
    // 10.50.1.0/24 is reserved for .5; 10.50.200.0/24 (outside Min/Max) for .6.
    etcd.reserve("10.50.1.0/24", "198.18.0.5").await;
    etcd.reserve("10.50.200.0/24", "198.18.0.6").await;

    let other = Host::start(&etcd, "198.18.0.7", true).await;
    assert_eq!(
        other.ready().await,
        net("10.50.2.0/24"),
        "never the reserved subnet"
    );

    let owner = Host::start(&etcd, "198.18.0.6", true).await;
    assert_eq!(owner.ready().await, net("10.50.200.0/24"));
    let st = owner.status().await;
    assert!(st.reservation);
    assert_eq!(st.lease_ttl_seconds, 0);
    let leases = owner.leases().await;
    let me = leases.leases.iter().find(|l| l.is_self).unwrap();
    assert!(me.reservation);
    assert_eq!(me.expires_in_seconds, -1);
    // The reservation is used as is: still no etcd lease on it.
    let keys = etcd.subnets().await;
    assert!(keys
        .iter()
        .any(|(s, _, l)| *s == net("10.50.200.0/24") && *l == 0));
    wait_for(Duration::from_secs(5), "routes both ways", || async {
        owner.routes().contains(&net("10.50.2.0/24"))
            && other.routes().contains(&net("10.50.200.0/24"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_for_the_same_subnet_all_end_distinct() {
    let etcd = Etcd::start().await;
    etcd.put_config(
        r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.1.0","SubnetMax":"10.50.4.0"}"#,
    )
    .await;
    // Every host believes 10.50.3.0/24 was its subnet before: they all race
    // for that key first, and the losers must list again and pick again.
    let mut dirs = Vec::new();
    for _ in 0..4 {
        let d = std::sync::Arc::new(TempDir::new("race"));
        std::fs::write(
            d.path().join("subnet.env"),
            "KOLACH_NETWORK=10.50.0.0/16\nKOLACH_SUBNET=10.50.3.1/24\nKOLACH_MTU=1472\nKOLACH_IPMASQ=false\n",
        )
        .unwrap();
        dirs.push(d);
    }
    let starts = dirs.iter().enumerate().map(|(i, d)| {
        let ip = format!("198.18.0.{}", 10 + i);
        let etcd = &etcd;
        async move { Host::start_in(etcd, d.clone(), &ip, true, &[]).await }
    });
    let hosts = futures::future::join_all(starts).await;
    let mut got = BTreeSet::new();
    for h in &hosts {
        wait_for(Duration::from_secs(20), "a subnet", || async {
            h.subnet().await.is_some()
        })
        .await;
        got.insert(h.subnet().await.unwrap());
    }
    assert_eq!(got.len(), 4, "every host got its own subnet: {got:?}");
    assert_eq!(etcd.subnets().await.len(), 4);
    for h in &hosts {
        h.ready().await;
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_or_revoked_own_lease_is_reclaimed() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    let sa = a.ready().await;

    etcd.delete_subnet(sa).await;
    wait_for(Duration::from_secs(5), "key back", || async {
        etcd.subnets()
            .await
            .iter()
            .any(|(s, v, _)| *s == sa && v.contains("198.18.0.1"))
    })
    .await;
    assert_eq!(a.subnet().await, Some(sa), "same subnet: its key was free");
    assert!(a
        .status()
        .await
        .warnings
        .iter()
        .any(|w| w.contains("lost lease")));

    // Revoking the etcd lease deletes the key and ends the keepalive.
    let lease = etcd.subnets().await.iter().find(|k| k.0 == sa).unwrap().2;
    etcd.client().await.lease_revoke(lease).await.unwrap();
    wait_for(
        Duration::from_secs(5),
        "key back on a new lease",
        || async {
            etcd.subnets()
                .await
                .iter()
                .any(|(s, _, l)| *s == sa && *l != lease && *l != 0)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_and_garbage_are_watched() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let a = Host::start(&etcd, "198.18.0.1", true).await;
    a.ready().await;
    // A flannel udp peer (no BackendType), a vxlan peer (other backend), garbage.
    etcd.fake_peer("10.50.77.0/24", r#"{"PublicIP":"198.18.0.77"}"#)
        .await;
    etcd.fake_peer("10.50.78.0/24", r#"{"PublicIP":"198.18.0.78","BackendType":"vxlan","BackendData":{"VtepMAC":"aa:bb:cc:dd:ee:ff"}}"#).await;
    etcd.fake_peer("10.50.79.0/24", r#"{"PublicIP":"nonsense"}"#)
        .await;
    wait_for(Duration::from_secs(5), "flannel peer routed", || async {
        a.routes() == vec![net("10.50.77.0/24")]
    })
    .await;
    let leases = a.leases().await;
    let vx = leases
        .leases
        .iter()
        .find(|l| l.backend_type == "vxlan")
        .expect("vxlan lease listed");
    assert_eq!(vx.backend_data, r#"{"VtepMAC":"aa:bb:cc:dd:ee:ff"}"#);
    assert_eq!(leases.leases.len(), 3, "garbage is not listed as a lease");

    etcd.delete_subnet(net("10.50.77.0/24")).await;
    wait_for(Duration::from_secs(2), "deleted peer unrouted", || async {
        a.routes().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_keeps_state_and_recovers() {
    let mut etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
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
    use kolach_controld::event::{Event, Shutdown};
    use kolach_controld::registry::{EtcdOptions, Registry};

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
    let task = tokio::spawn(kolach_controld::watcher::subnets_from(
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
async fn the_binary_serves_until_sigterm_and_keeps_its_lease() {
    let etcd = Etcd::start().await;
    etcd.put_config(NET16).await;
    let dir = TempDir::new("bin");
    let dp = common::FakeDataplane::start(dir.path()).await;
    let env_file = dir.path().join("subnet.env");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kolach-controld"))
        .env("KOLACH_ETCD_ENDPOINTS", &etcd.url)
        .env("KOLACH_IFACE", "lo")
        .env("KOLACH_PUBLIC_IP", "198.18.0.1")
        .env("KOLACH_RUN_DIR", dir.path())
        .env("KOLACH_SUBNET_FILE", &env_file)
        .env("KOLACH_SUBNET_LEASE_TTL", "60s")
        .env_remove("NOTIFY_SOCKET")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        Duration::from_secs(15),
        "subnet.env from the binary",
        || {
            let f = env_file.clone();
            async move { f.exists() }
        },
    )
    .await;
    assert!(dp.rec.count() >= 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("kolach-controld did not exit on SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    assert!(!dir.path().join("controld.sock").exists(), "socket removed");
    assert_eq!(
        etcd.subnets().await.len(),
        1,
        "the lease stays for the next start"
    );
    dp.stop().await;
}

#[test]
fn the_binary_exits_1_with_a_hint_when_the_interface_is_missing() {
    let dir = TempDir::new("bin-bad");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kolach-controld"))
        .args(["--iface", "eth9nope", "--run-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no interface named eth9nope"), "{err}");
    assert!(err.contains("hint:"), "{err}");
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
