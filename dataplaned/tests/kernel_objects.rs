//! The kernel backends against a real kernel, in a namespace this test makes,
//! asserting with `ip -j` / `bridge -j` what the kernel shows: the vxlan
//! device and its per-peer route, neighbour and FDB entries; a removed peer's
//! objects gone; a restart with the saved snapshot changing nothing; a VNI
//! change; a switch to host-gw; foreign routes untouched; --cleanup. And the
//! routes each backend gives peers' pool blocks (DESIGN §10), following the
//! snapshot, and removed by --cleanup.

mod common;

use std::sync::Arc;

use common::recording::Recording;
use common::{
    addresses, fdb, kolach_routes, neighbours, snapshot, vxlan_devices, with_blocks, Monitor,
    Netns, NsRuntime, TempDir,
};
use kolach_dataplaned::engine::{Engine, Origin};
use kolach_dataplaned::kernel::{Kernel, RtNetlink};
use kolach_proto::dataplane::{self as pb, BackendType};

const B: (&str, &str) = ("10.50.7.0/24", "198.18.0.2");
const C: (&str, &str) = ("10.50.9.0/24", "198.18.0.3");

fn vxlan(generation: u64, peers: &[(&str, &str)]) -> pb::Snapshot {
    snapshot(
        BackendType::Vxlan,
        generation,
        "10.50.18.0/24",
        "198.18.0.1",
        peers,
    )
}

fn engine(rt: &NsRuntime, dir: &TempDir) -> Arc<Engine> {
    let d = dir.0.clone();
    rt.run(async move {
        let k: Arc<dyn Kernel> = Arc::new(RtNetlink::connect().unwrap());
        Arc::new(Engine::new(
            d,
            "kolach0".into(),
            k,
            Arc::new(kolach_dataplaned::firewall::System),
        ))
    })
}

fn apply(rt: &NsRuntime, e: &Arc<Engine>, s: pb::Snapshot) {
    let e = e.clone();
    let r = rt.run(async move { e.apply(s, Origin::Controld).await });
    assert!(r.applied, "{}", r.reason);
}

fn stop(rt: &NsRuntime, e: Arc<Engine>) {
    rt.run(async move { e.shutdown().await });
}

#[test]
fn vxlan_objects_peer_removal_restart_vni_change_host_gw_and_cleanup() {
    let ns = Netns::new("kobj");
    let rt = ns.runtime();
    let dir = TempDir::new("kobj-run");
    ns.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u1"]);
    ns.ip(&["addr", "add", "198.18.0.1/24", "dev", "u0"]);
    ns.ip(&["link", "set", "u0", "up"]);
    ns.ip(&["link", "set", "u1", "up"]);
    // Routes someone else made: one elsewhere, one on a peer's subnet later.
    ns.ip(&[
        "route",
        "add",
        "192.0.2.0/24",
        "via",
        "198.18.0.254",
        "proto",
        "static",
    ]);
    let foreign = ns.ip(&["route", "show", "proto", "static"]);

    let e = engine(&rt, &dir);
    apply(&rt, &e, vxlan(1, &[B, C]));

    let link = &ns.ip_json(&["-d", "link", "show", "dev", "kolach.1"])[0];
    let info = &link["linkinfo"];
    assert_eq!(info["info_kind"], "vxlan");
    let data = &info["info_data"];
    assert_eq!(
        (
            &data["id"],
            &data["port"],
            &data["local"],
            &data["learning"],
            &data["link"]
        ),
        (
            &1.into(),
            &8472.into(),
            &"198.18.0.1".into(),
            &false.into(),
            &"u0".into()
        )
    );
    assert_eq!(link["mtu"], 1450);
    assert_eq!(link["address"], "0e:6b:c6:12:00:01");
    assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_eq!(addresses(&ns, "kolach.1"), ["10.50.18.0/32"]);
    assert_eq!(
        kolach_routes(&ns),
        [
            "10.50.7.0/24 via 10.50.7.0 dev kolach.1 onlink",
            "10.50.9.0/24 via 10.50.9.0 dev kolach.1 onlink",
        ]
    );
    assert_eq!(
        neighbours(&ns, "kolach.1"),
        [
            "10.50.7.0 lladdr 0e:6b:c6:12:00:02 PERMANENT",
            "10.50.9.0 lladdr 0e:6b:c6:12:00:03 PERMANENT",
        ]
    );
    assert_eq!(
        fdb(&ns, "kolach.1"),
        [
            "0e:6b:c6:12:00:02 dst 198.18.0.2 self permanent",
            "0e:6b:c6:12:00:03 dst 198.18.0.3 self permanent",
        ]
    );
    let st = e.status();
    assert_eq!(
        (st.device.as_str(), st.mode.as_str(), st.route_count),
        ("kolach.1", "kernel", 2)
    );
    assert!(st.errors.is_empty(), "{:?}", st.errors);

    // Peer C's lease is gone: its route, neighbour and FDB entry go.
    apply(&rt, &e, vxlan(2, &[B]));
    assert_eq!(
        kolach_routes(&ns),
        ["10.50.7.0/24 via 10.50.7.0 dev kolach.1 onlink"]
    );
    assert_eq!(
        neighbours(&ns, "kolach.1"),
        ["10.50.7.0 lladdr 0e:6b:c6:12:00:02 PERMANENT"]
    );
    assert_eq!(
        fdb(&ns, "kolach.1"),
        ["0e:6b:c6:12:00:02 dst 198.18.0.2 self permanent"]
    );

    // Restart: a new engine restores the saved snapshot and changes nothing,
    // neither by its own account nor by the kernel's.
    stop(&rt, e);
    let rec = rt.run(async { Arc::new(Recording::new(RtNetlink::connect().unwrap())) });
    let k: Arc<dyn Kernel> = rec.clone();
    let e = Arc::new(Engine::new(
        dir.0.clone(),
        "kolach0".into(),
        k,
        Arc::new(kolach_dataplaned::firewall::System),
    ));
    let monitor = Monitor::start(&ns);
    let e2 = e.clone();
    rt.run(async move { e2.restore().await });
    let seen = monitor.finish();
    assert_eq!(e.status().applied_version.unwrap().generation, 2);
    assert!(rec.changes().is_empty(), "{:?}", rec.changes());
    assert!(seen.trim().is_empty(), "kernel changed on restart:\n{seen}");

    // A reinstalled peer (new MAC) and a moved one (new PublicIP). The
    // monitor that saw nothing above does see this change.
    let mut s = vxlan(3, &[B]);
    s.routes[0].vtep_mac = vec![0x0e, 0x6b, 0, 0, 0, 9];
    let monitor = Monitor::start(&ns);
    apply(&rt, &e, s);
    let seen = monitor.finish();
    assert!(seen.contains("0e:6b:00:00:00:09"), "monitor saw: {seen}");
    assert_eq!(rec.changes().len(), 3, "{:?}", rec.changes());
    assert_eq!(
        neighbours(&ns, "kolach.1"),
        ["10.50.7.0 lladdr 0e:6b:00:00:00:09 PERMANENT"]
    );
    assert_eq!(
        fdb(&ns, "kolach.1"),
        ["0e:6b:00:00:00:09 dst 198.18.0.2 self permanent"]
    );
    let mut s = vxlan(4, &[B]);
    s.routes[0].vtep_mac = vec![0x0e, 0x6b, 0, 0, 0, 9];
    s.routes[0].public_ip = Some("198.18.0.22".parse::<std::net::Ipv4Addr>().unwrap().into());
    apply(&rt, &e, s);
    assert_eq!(
        fdb(&ns, "kolach.1"),
        ["0e:6b:00:00:00:09 dst 198.18.0.22 self permanent"]
    );

    // VNI 1 -> 2: a new device, the old one and its objects gone.
    let mut s = vxlan(5, &[B]);
    s.backend.as_mut().unwrap().vni = 2;
    apply(&rt, &e, s);
    assert_eq!(vxlan_devices(&ns), ["kolach.2"]);
    assert_eq!(
        ns.ip_json(&["-d", "link", "show", "dev", "kolach.2"])[0]["linkinfo"]["info_data"]["id"],
        2
    );
    assert_eq!(
        kolach_routes(&ns),
        ["10.50.7.0/24 via 10.50.7.0 dev kolach.2 onlink"]
    );
    assert_eq!(e.status().device, "kolach.2");

    // Switch to host-gw: routes via the peer's PublicIP, the vxlan device
    // gone; a peer off the segment is not routed and says why.
    let far = ("10.50.9.0/24", "198.19.5.3");
    apply(
        &rt,
        &e,
        snapshot(
            BackendType::HostGw,
            6,
            "10.50.18.0/24",
            "198.18.0.1",
            &[B, far],
        ),
    );
    assert!(vxlan_devices(&ns).is_empty());
    assert_eq!(kolach_routes(&ns), ["10.50.7.0/24 via 198.18.0.2 dev u0"]);
    let st = e.status();
    assert_eq!(
        (st.device.as_str(), st.mode.as_str(), st.route_count),
        ("u0", "kernel", 1)
    );
    assert_eq!(st.errors.len(), 1, "{:?}", st.errors);
    assert!(
        st.errors[0].contains("10.50.9.0/24") && st.errors[0].contains("layer-2"),
        "{:?}",
        st.errors
    );
    assert_eq!(ns.ip(&["route", "show", "proto", "static"]), foreign);

    // --cleanup leaves no kolach object behind (a proto-107 route in another
    // table included), and the foreign route.
    apply(&rt, &e, vxlan(7, &[B]));
    stop(&rt, e);
    ns.ip(&[
        "route",
        "add",
        "10.50.200.0/24",
        "via",
        "198.18.0.2",
        "dev",
        "u0",
        "proto",
        "107",
        "table",
        "100",
    ]);
    let d = dir.0.clone();
    rt.run(async move {
        let k = RtNetlink::connect().unwrap();
        kolach_dataplaned::daemon::cleanup::cleanup(
            Ok(&k),
            &kolach_dataplaned::firewall::System,
            "kolach0",
            &d,
        )
        .await
    })
    .unwrap();
    assert!(vxlan_devices(&ns).is_empty());
    assert!(kolach_routes(&ns).is_empty());
    let other = ns.ip(&["route", "show", "table", "all", "proto", "107"]);
    assert!(other.trim().is_empty(), "{other}");
    assert!(!ns.has_link("kolach0"));
    assert!(!kolach_dataplaned::engine::store::path(&dir.0).exists());
    assert_eq!(ns.ip(&["route", "show", "proto", "static"]), foreign);
}

#[test]
fn peers_blocks_are_routed_by_each_backend_and_cleaned_up() {
    let ns = Netns::new("kblk");
    let rt = ns.runtime();
    let dir = TempDir::new("kblk-run");
    ns.ip(&["link", "add", "u0", "type", "veth", "peer", "name", "u1"]);
    ns.ip(&["addr", "add", "198.18.0.1/24", "dev", "u0"]);
    ns.ip(&["link", "set", "u0", "up"]);
    ns.ip(&["link", "set", "u1", "up"]);
    let snap = |kind, generation, b: &[&str], c: &[&str]| {
        with_blocks(
            snapshot(kind, generation, "10.50.18.0/24", "198.18.0.1", &[B, C]),
            &["203.0.113.0/28"],
            &[b, c],
        )
    };
    let e = engine(&rt, &dir);

    // vxlan: via the peer's gateway, on the peer's neighbour and FDB entry.
    apply(
        &rt,
        &e,
        snap(
            BackendType::Vxlan,
            1,
            &["203.0.113.16/28", "198.51.100.0/26"],
            &["203.0.113.32/28"],
        ),
    );
    assert_eq!(
        kolach_routes(&ns),
        [
            "10.50.7.0/24 via 10.50.7.0 dev kolach.1 onlink",
            "10.50.9.0/24 via 10.50.9.0 dev kolach.1 onlink",
            "198.51.100.0/26 via 10.50.7.0 dev kolach.1 onlink",
            "203.0.113.16/28 via 10.50.7.0 dev kolach.1 onlink",
            "203.0.113.32/28 via 10.50.9.0 dev kolach.1 onlink",
        ]
    );
    assert_eq!(neighbours(&ns, "kolach.1").len(), 2);
    assert_eq!(fdb(&ns, "kolach.1").len(), 2);
    assert_eq!(e.routes().routes[0].blocks.len(), 2);

    // One block given back, one moving from B to C.
    apply(
        &rt,
        &e,
        snap(
            BackendType::Vxlan,
            2,
            &[],
            &["203.0.113.32/28", "198.51.100.0/26"],
        ),
    );
    assert_eq!(
        kolach_routes(&ns),
        [
            "10.50.7.0/24 via 10.50.7.0 dev kolach.1 onlink",
            "10.50.9.0/24 via 10.50.9.0 dev kolach.1 onlink",
            "198.51.100.0/26 via 10.50.9.0 dev kolach.1 onlink",
            "203.0.113.32/28 via 10.50.9.0 dev kolach.1 onlink",
        ]
    );

    // host-gw: via the peer's PublicIP.
    apply(
        &rt,
        &e,
        snap(
            BackendType::HostGw,
            3,
            &["203.0.113.16/28"],
            &["203.0.113.32/28"],
        ),
    );
    assert_eq!(
        kolach_routes(&ns),
        [
            "10.50.7.0/24 via 198.18.0.2 dev u0",
            "10.50.9.0/24 via 198.18.0.3 dev u0",
            "203.0.113.16/28 via 198.18.0.2 dev u0",
            "203.0.113.32/28 via 198.18.0.3 dev u0",
        ]
    );

    // udp: into the TUN, scope link (the Network reaches it by its address).
    apply(
        &rt,
        &e,
        snap(
            BackendType::Udp,
            4,
            &["203.0.113.16/28"],
            &["203.0.113.32/28"],
        ),
    );
    assert_eq!(
        kolach_routes(&ns),
        [
            "203.0.113.16/28 via - dev kolach0",
            "203.0.113.32/28 via - dev kolach0",
        ]
    );
    for r in ns
        .ip_json(&["route", "show", "proto", "107"])
        .as_array()
        .unwrap()
    {
        assert_eq!(r["scope"], "link", "{r}");
    }
    assert!(e.status().errors.is_empty(), "{:?}", e.status().errors);

    // A restart restores the blocks and finds the kernel right: the routes
    // read back as they were made.
    stop(&rt, e);
    let rec = rt.run(async { Arc::new(Recording::new(RtNetlink::connect().unwrap())) });
    let k: Arc<dyn Kernel> = rec.clone();
    let e = Arc::new(Engine::new(
        dir.0.clone(),
        "kolach0".into(),
        k,
        Arc::new(kolach_dataplaned::firewall::System),
    ));
    let e2 = e.clone();
    rt.run(async move { e2.restore().await });
    assert_eq!(e.status().applied_version.unwrap().generation, 4);
    assert_eq!(e.routes().routes[1].blocks.len(), 1);
    assert!(rec.changes().is_empty(), "{:?}", rec.changes());

    // --cleanup takes the block routes with everything else.
    stop(&rt, e);
    let d = dir.0.clone();
    rt.run(async move {
        let k = RtNetlink::connect().unwrap();
        kolach_dataplaned::daemon::cleanup::cleanup(
            Ok(&k),
            &kolach_dataplaned::firewall::System,
            "kolach0",
            &d,
        )
        .await
    })
    .unwrap();
    let left = ns.ip(&["route", "show", "table", "all", "proto", "107"]);
    assert!(left.trim().is_empty(), "{left}");
    assert!(!ns.has_link("kolach0"));
}
