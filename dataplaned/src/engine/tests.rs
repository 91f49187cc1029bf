use super::*;
use crate::firewall::fake::FakeRunner;
use crate::kernel::fake::FakeKernel;
use crate::snapshot::tests::good;

fn engine(name: &str) -> (Engine, PathBuf) {
    let d = std::env::temp_dir().join(format!("kdp-engine-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let k = FakeKernel::default();
    k.add_link("lo", 1, "", &["127.0.0.1/8"]);
    let e = Engine::new(
        d.clone(),
        "kolach0".into(),
        Arc::new(k),
        Arc::new(FakeRunner::default()),
    );
    (e, d)
}

fn alloc(generation: u64) -> pb::Snapshot {
    let mut s = good();
    s.backend.as_mut().unwrap().r#type = pb::BackendType::Alloc as i32;
    s.version.as_mut().unwrap().generation = generation;
    s
}

#[tokio::test]
async fn applies_orders_and_saves() {
    let (e, d) = engine("order");
    assert!(!e.status().has_snapshot);
    let r = e.apply(alloc(2), Origin::Controld).await;
    assert!(r.applied, "{}", r.reason);
    assert_eq!(r.applied_version.unwrap().generation, 2);
    assert_eq!(store::load(&d).unwrap(), Some(alloc(2)));

    let r = e.apply(alloc(2), Origin::Controld).await;
    assert!(r.applied);
    assert_eq!(r.reason, "already applied");

    let r = e.apply(alloc(1), Origin::Controld).await;
    assert!(!r.applied);
    assert!(r.reason.contains("older"), "{}", r.reason);
    assert_eq!(r.applied_version.unwrap().generation, 2);
    let st = e.status();
    assert_eq!(st.errors, vec![r.reason.clone()]);
    assert!(st.has_snapshot);
    assert_eq!(st.route_count, 1);
    assert_eq!(st.mode, "none");
    assert_eq!(e.routes().routes.len(), 1);
    assert_eq!(e.backend_kind().await, Some(BackendKind::Alloc));
    // alloc exports too; status and routes say where.
    assert_eq!(st.export_table, 119);
    let routes = e.routes();
    assert_eq!(routes.export_table, 119);
    let exported: Vec<String> = routes
        .exported
        .iter()
        .map(|n| ipnet::Ipv4Net::try_from(n).unwrap().to_string())
        .collect();
    assert_eq!(exported, ["10.50.18.0/24"]);

    // A good one clears the error.
    assert!(e.apply(alloc(3), Origin::Controld).await.applied);
    assert!(e.status().errors.is_empty());
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn only_applied_snapshots_are_timed() {
    let (e, d) = engine("timed");
    let h = e.status().snapshot_apply_seconds.unwrap();
    assert_eq!((h.count, e.status().last_apply_us), (0, 0));
    assert_eq!(h.buckets.len(), histogram::APPLY_BOUNDS.len());
    assert!(e.apply(alloc(2), Origin::Controld).await.applied);
    // Already applied, older, invalid: none of them is an apply.
    assert!(e.apply(alloc(2), Origin::Controld).await.applied);
    assert!(!e.apply(alloc(1), Origin::Controld).await.applied);
    assert!(
        !e.apply(pb::Snapshot::default(), Origin::Controld)
            .await
            .applied
    );
    assert!(e.apply(alloc(3), Origin::Controld).await.applied);
    let st = e.status();
    let h = st.snapshot_apply_seconds.unwrap();
    assert_eq!(h.count, 2);
    assert!(h.sum > 0.0);
    // The last one is one of the two.
    assert!(st.last_apply_us as f64 <= h.sum * 1e6 + 1.0);
    assert!(h.buckets.last().unwrap().cumulative_count <= h.count);
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn vxlan_applies_and_needs_its_mac() {
    let d = std::env::temp_dir().join(format!("kdp-engine-vxlan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let k = FakeKernel::default();
    k.add_link("lo", 1, "", &["127.0.0.1/8"]);
    k.add_link("eth0", 2, "veth", &["198.18.0.1/24"]);
    let e = Engine::new(
        d.clone(),
        "kolach0".into(),
        Arc::new(k),
        Arc::new(FakeRunner::default()),
    );

    let mut s = crate::snapshot::tests::vxlan();
    s.local_vtep_mac.clear();
    let r = e.apply(s, Origin::Controld).await;
    assert!(!r.applied);
    assert_eq!(
        r.reason,
        "invalid snapshot: local_vtep_mac: expected 6 bytes, got 0"
    );
    assert!(!e.status().has_snapshot);

    let r = e
        .apply(crate::snapshot::tests::vxlan(), Origin::Controld)
        .await;
    assert!(r.applied, "{}", r.reason);
    let st = e.status();
    assert_eq!(
        (st.device.as_str(), st.mode.as_str(), st.route_count),
        ("kolach.1", "kernel", 1)
    );
    assert!(st.errors.is_empty(), "{:?}", st.errors);
    let b = st.backend.unwrap();
    assert_eq!(
        (b.r#type, b.port, b.vni),
        (pb::BackendType::Vxlan as i32, 8472, 1),
        "status shows the defaults in effect"
    );
    assert_eq!(e.backend_kind().await, Some(BackendKind::Vxlan));
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn failed_switch_keeps_the_old_backend() {
    let (e, d) = engine("failed-switch");
    assert!(e.apply(alloc(1), Origin::Controld).await.applied);
    // host-gw on an iface the (empty) fake kernel does not have.
    let mut s = alloc(2);
    s.backend.as_mut().unwrap().r#type = pb::BackendType::HostGw as i32;
    let r = e.apply(s, Origin::Controld).await;
    assert!(!r.applied);
    assert_eq!(r.reason, "underlay interface eth0 does not exist");
    assert_eq!(e.backend_kind().await, Some(BackendKind::Alloc));
    assert_eq!(e.status().applied_version.unwrap().generation, 1);
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn invalid_snapshot_names_the_field() {
    let (e, d) = engine("invalid");
    let mut s = good();
    s.network = None;
    let r = e.apply(s, Origin::Controld).await;
    assert!(!r.applied);
    assert_eq!(r.reason, "invalid snapshot: network is missing");
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn restore_applies_the_saved_snapshot_and_ignores_corrupt_ones() {
    let (e, d) = engine("restore");
    store::save(&d, &alloc(5)).unwrap();
    e.restore().await;
    assert_eq!(e.status().applied_version.unwrap().generation, 5);

    let (e2, d2) = engine("restore-corrupt");
    std::fs::write(store::path(&d2), b"\xff\xff garbage").unwrap();
    e2.restore().await;
    assert!(!e2.status().has_snapshot);
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::remove_dir_all(&d2).unwrap();
}

#[tokio::test]
async fn hand_over_saves_the_applied_snapshot_and_carries_counters() {
    let (e, d) = engine("handover");
    let carried = Carried {
        upgrades: 4,
        counters: vec![7, 70],
        ..Default::default()
    };
    let e = e.resuming(&carried, Inherited::default());
    assert_eq!(e.status().upgrades, 4);
    assert_eq!(e.status().counters.unwrap().tun_rx_packets, 7);
    // Restored snapshots are not written back; lose the file to see the
    // handover write it.
    assert!(e.apply(alloc(5), Origin::Restore).await.applied);
    store::remove(&d).unwrap();
    let (fds, counters) = e
        .hand_over(usize::MAX, |fds, counters, paused_at| {
            assert!(paused_at > 0);
            (fds, counters)
        })
        .await;
    assert_eq!(fds, None, "alloc has no loop to hand over");
    assert_eq!(&counters[..2], &[7, 70]);
    assert_eq!(store::load(&d).unwrap(), Some(alloc(5)));
    // The engine goes on after a failed exec.
    assert!(e.apply(alloc(6), Origin::Controld).await.applied);
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn blocks_are_saved_restored_and_shown_by_routes() {
    let d = std::env::temp_dir().join(format!("kdp-engine-blocks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let k = Arc::new(FakeKernel::default());
    k.add_link("eth0", 2, "veth", &["198.18.0.1/24"]);
    let host_gw = |generation| {
        let mut s = crate::snapshot::tests::with_blocks();
        s.backend.as_mut().unwrap().r#type = pb::BackendType::HostGw as i32;
        s.routes[1].public_ip = Some("198.18.0.3".parse::<std::net::Ipv4Addr>().unwrap().into());
        s.version.as_mut().unwrap().generation = generation;
        s
    };
    let e = Engine::new(
        d.clone(),
        "kolach0".into(),
        k.clone(),
        Arc::new(FakeRunner::default()),
    );
    let r = e.apply(host_gw(1), Origin::Controld).await;
    assert!(r.applied, "{}", r.reason);
    let routes = e.routes().routes;
    assert_eq!(routes, host_gw(1).routes);
    assert_eq!(routes[0].blocks.len(), 2);
    assert_eq!(store::load(&d).unwrap(), Some(host_gw(1)));
    let programmed = k.objects();
    assert_eq!(programmed.len(), 5, "{programmed:?}");

    // Overlapping blocks: refused, the applied table stays.
    let mut bad = host_gw(2);
    bad.routes[1].blocks = bad.routes[0].blocks.clone();
    let r = e.apply(bad, Origin::Controld).await;
    assert!(!r.applied);
    assert_eq!(
        r.reason,
        "invalid snapshot: routes[1].blocks[1]: 198.51.100.0/26 is listed twice (also routes[0].blocks[1])"
    );
    assert_eq!(e.routes().routes, host_gw(1).routes);

    // A restarted dataplane (or the next image of a hot upgrade) restores
    // the blocks from the saved snapshot and finds the kernel right.
    e.shutdown().await;
    k.take_calls();
    let e = Engine::new(
        d.clone(),
        "kolach0".into(),
        k.clone(),
        Arc::new(FakeRunner::default()),
    );
    e.restore().await;
    let a = e.applied().unwrap();
    assert_eq!(a.snapshot.local_blocks, ["203.0.113.0/28".parse().unwrap()]);
    assert_eq!(a.snapshot.routes[0].blocks.len(), 2);
    assert_eq!(e.routes().routes, host_gw(1).routes);
    assert!(k.take_calls().is_empty());
    assert_eq!(k.objects(), programmed);
    std::fs::remove_dir_all(&d).unwrap();
}

#[tokio::test]
async fn firewall_follows_the_snapshot_and_its_problems_show_in_status() {
    let d = std::env::temp_dir().join(format!("kdp-engine-fw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let k = FakeKernel::default();
    k.add_link("lo", 1, "", &["127.0.0.1/8"]);
    let fw = Arc::new(FakeRunner::default());
    fw.missing.lock().unwrap().insert("nft".into());
    // No firewall in this host: nothing to add to FORWARD.
    fw.reply("iptables -S FORWARD", true, "-P FORWARD ACCEPT\n", "");
    let e = Engine::new(d.clone(), "kolach0".into(), Arc::new(k), fw.clone());
    assert_eq!(e.status().firewall, None);
    // The routes are applied all the same.
    let r = e.apply(alloc(1), Origin::Controld).await;
    assert!(r.applied, "{}", r.reason);
    let st = e.status();
    let f = st.firewall.unwrap();
    assert!(f.ip_masq && f.forward_rules);
    assert_eq!(
        (f.masq_table.as_str(), f.forward_chain.as_str()),
        ("ip kolach", "FORWARD")
    );
    assert_eq!(
        st.errors,
        ["ip-masq: nft not found (install the Debian package nftables)"]
    );
    assert_eq!(fw.take_calls(), ["iptables -S FORWARD"]);
    // The recheck: nft installed since.
    fw.missing.lock().unwrap().clear();
    fw.reply(
        "nft -j list table ip kolach",
        false,
        "",
        "Error: No such file or directory\n",
    );
    e.recheck_firewall().await;
    assert!(e.status().errors.is_empty());
    assert_eq!(
        fw.take_calls(),
        [
            "nft -j list table ip kolach",
            "nft -f -",
            "iptables -S FORWARD"
        ]
    );
    std::fs::remove_dir_all(&d).unwrap();
}
