//! The backends against the fake kernel: exactly which calls each snapshot
//! change makes, and that nothing else is touched.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kolach_proto::dataplane::{self as pb, BackendType};

use super::*;
use crate::kernel::fake::FakeKernel;
use crate::kernel::kobjects::{KRoute, KOLACH_PROTO};
use crate::snapshot::validate;

/// A host at 198.18.0.1 on eth0 (198.18.0.0/24), holding 10.50.18.0/24.
fn kernel() -> FakeKernel {
    let k = FakeKernel::default();
    k.add_link("eth0", 2, "veth", &["198.18.0.1/24"]);
    k
}

fn mac(last: u8) -> Vec<u8> {
    vec![0x0e, 0x6b, 198, 18, 0, last]
}

/// A snapshot of `kind` with peers (subnet, PublicIP, VTEP MAC's last byte).
fn snap(kind: BackendType, vni: u32, peers: &[(&str, &str, u8)]) -> ValidSnapshot {
    let net = |s: &str| Some(s.parse::<Ipv4Net>().unwrap().into());
    let ip = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap().into());
    let vxlan = kind == BackendType::Vxlan;
    let raw = pb::Snapshot {
        version: Some(pb::SnapshotVersion {
            epoch: 1,
            generation: 1,
            etcd_revision: 1,
        }),
        backend: Some(pb::Backend {
            r#type: kind as i32,
            port: 0,
            vni,
        }),
        network: net("10.50.0.0/16"),
        local_subnet: net("10.50.18.0/24"),
        public_ip: ip("198.18.0.1"),
        iface: "eth0".into(),
        mtu: 1450,
        local_vtep_mac: if vxlan { mac(1) } else { vec![] },
        local_blocks: vec![],
        export_table: 0,
        ip_masq: false,
        iptables_forward_rules: false,
        routes: peers
            .iter()
            .map(|(s, p, m)| pb::Route {
                subnet: net(s),
                public_ip: ip(p),
                vtep_mac: if vxlan { mac(*m) } else { vec![] },
                blocks: vec![],
            })
            .collect(),
    };
    validate(&raw).unwrap()
}

fn vx(peers: &[(&str, &str, u8)]) -> ValidSnapshot {
    snap(BackendType::Vxlan, 1, peers)
}

const B: (&str, &str, u8) = ("10.50.7.0/24", "198.18.0.2", 2);
const C: (&str, &str, u8) = ("10.50.9.0/24", "198.18.0.3", 3);

async fn apply(b: &mut Backend, k: &FakeKernel, s: &ValidSnapshot) -> Outcome {
    b.apply(s, k).await.unwrap()
}

fn backend(kind: BackendKind) -> Backend {
    Backend::create(
        kind,
        "kolach0",
        crate::backend::udp::Options::default(),
        Arc::new(Counters::default()),
    )
}

#[tokio::test]
async fn vxlan_first_apply_creates_device_then_peer_objects() {
    let k = kernel();
    let mut b = backend(BackendKind::Vxlan);
    let o = apply(&mut b, &k, &vx(&[B])).await;
    assert_eq!(
        o,
        Outcome {
            warnings: vec![],
            routes: 1
        }
    );
    assert_eq!(
        k.take_calls(),
        [
            "create-vxlan kolach.1 vni 1 port 8472 local 198.18.0.1 dev eth0 mtu 1450 mac 0e:6b:c6:12:00:01",
            "add 100 10.50.18.0/32",
            "set-link kolach.1 up",
            "fdb 0e:6b:c6:12:00:02 dst 198.18.0.2 dev kolach.1 set",
            "neigh 10.50.7.0 lladdr 0e:6b:c6:12:00:02 dev kolach.1 set",
            "route add 10.50.7.0/24 via 10.50.7.0 dev kolach.1 onlink",
        ]
    );
    assert_eq!(
        (b.device(), b.mode().as_str()),
        (Some("kolach.1"), "kernel")
    );
    let dev = k.link_named("kolach.1").unwrap();
    assert!(dev.up && dev.vxlan.is_some_and(|v| !v.learning));
}

#[tokio::test]
async fn unchanged_snapshot_and_restart_make_no_calls() {
    let k = kernel();
    let s = vx(&[B, C]);
    apply(&mut backend(BackendKind::Vxlan), &k, &s).await;
    k.take_calls();
    let mut b = backend(BackendKind::Vxlan);
    apply(&mut b, &k, &s).await;
    assert!(
        k.take_calls().is_empty(),
        "a restarted dataplane must not touch the kernel"
    );
    apply(&mut b, &k, &s).await;
    assert!(k.take_calls().is_empty());
}

#[tokio::test]
async fn peers_added_and_removed() {
    let k = kernel();
    let mut b = backend(BackendKind::Vxlan);
    apply(&mut b, &k, &vx(&[B])).await;
    k.take_calls();
    apply(&mut b, &k, &vx(&[B, C])).await;
    assert_eq!(
        k.take_calls(),
        [
            "fdb 0e:6b:c6:12:00:03 dst 198.18.0.3 dev kolach.1 set",
            "neigh 10.50.9.0 lladdr 0e:6b:c6:12:00:03 dev kolach.1 set",
            "route add 10.50.9.0/24 via 10.50.9.0 dev kolach.1 onlink",
        ]
    );
    let o = apply(&mut b, &k, &vx(&[C])).await;
    assert_eq!(o.routes, 1);
    assert_eq!(
        k.take_calls(),
        [
            "route del 10.50.7.0/24 via 10.50.7.0 dev kolach.1 onlink",
            "neigh 10.50.7.0 lladdr 0e:6b:c6:12:00:02 dev kolach.1 del",
            "fdb 0e:6b:c6:12:00:02 dst 198.18.0.2 dev kolach.1 del",
        ]
    );
    assert_eq!(
        k.objects(),
        [
            "10.50.9.0/24 via 10.50.9.0 dev kolach.1 onlink proto 107",
            "fdb 0e:6b:c6:12:00:03 dst 198.18.0.3 dev kolach.1",
            "neigh 10.50.9.0 lladdr 0e:6b:c6:12:00:03 dev kolach.1",
        ]
    );
}

#[tokio::test]
async fn peer_mac_or_public_ip_change() {
    let k = kernel();
    let mut b = backend(BackendKind::Vxlan);
    apply(&mut b, &k, &vx(&[B])).await;
    k.take_calls();
    // Reinstalled peer with another MAC: the route stays as it is.
    apply(&mut b, &k, &vx(&[("10.50.7.0/24", "198.18.0.2", 9)])).await;
    assert_eq!(
        k.take_calls(),
        [
            "fdb 0e:6b:c6:12:00:09 dst 198.18.0.2 dev kolach.1 set",
            "neigh 10.50.7.0 lladdr 0e:6b:c6:12:00:09 dev kolach.1 set",
            "fdb 0e:6b:c6:12:00:02 dst 198.18.0.2 dev kolach.1 del",
        ]
    );
    // Moved peer: only the FDB destination changes.
    apply(&mut b, &k, &vx(&[("10.50.7.0/24", "198.18.0.22", 9)])).await;
    assert_eq!(
        k.take_calls(),
        ["fdb 0e:6b:c6:12:00:09 dst 198.18.0.22 dev kolach.1 set"]
    );
}

fn route(dst: &str, via: &str, oif: u32) -> KRoute {
    KRoute {
        dst: dst.parse().unwrap(),
        via: via.parse().unwrap(),
        oif,
        onlink: false,
    }
}

#[tokio::test]
async fn foreign_routes_are_never_touched() {
    let k = kernel();
    // Someone's static route elsewhere, and one squatting on a peer's subnet.
    let elsewhere = route("192.0.2.0/24", "198.18.0.254", 2);
    let squatter = route("10.50.9.0/24", "198.18.0.254", 2);
    k.add_foreign_route(elsewhere, 4);
    k.add_foreign_route(squatter, 4);
    let mut b = backend(BackendKind::Vxlan);
    let o = apply(&mut b, &k, &vx(&[B, C])).await;
    assert_eq!(
        o.warnings,
        ["a route to 10.50.9.0/24 exists that kolach did not make (not proto 107); left alone"]
    );
    let routes = k.routes.lock().unwrap().clone();
    assert!(routes.contains(&(elsewhere, 4)) && routes.contains(&(squatter, 4)));
    // Everything else for that peer is in place; B is routed.
    assert!(k.objects().iter().any(|o| o.starts_with("10.50.7.0/24")));
    // Switching to alloc removes kolach's routes only.
    k.take_calls();
    apply(
        &mut backend(BackendKind::Alloc),
        &k,
        &snap(BackendType::Alloc, 0, &[]),
    )
    .await;
    let routes = k.routes.lock().unwrap().clone();
    assert_eq!(routes, [(elsewhere, 4), (squatter, 4)]);
    assert!(k.take_calls().iter().all(|c| !c.contains("198.18.0.254")));
}

#[tokio::test]
async fn vni_change_moves_to_a_new_device() {
    let k = kernel();
    let mut b = backend(BackendKind::Vxlan);
    apply(&mut b, &k, &vx(&[B])).await;
    k.take_calls();
    apply(&mut b, &k, &snap(BackendType::Vxlan, 2, &[B])).await;
    let calls = k.take_calls();
    assert_eq!(calls[0], "create-vxlan kolach.2 vni 2 port 8472 local 198.18.0.1 dev eth0 mtu 1450 mac 0e:6b:c6:12:00:01");
    assert!(
        calls.contains(&"route replace 10.50.7.0/24 via 10.50.7.0 dev kolach.2 onlink".to_string()),
        "{calls:?}"
    );
    assert_eq!(calls.last().unwrap(), "delete-link 100");
    assert!(k.link_named("kolach.1").is_none());
    assert_eq!(b.device(), Some("kolach.2"));
    assert_eq!(
        k.objects(),
        [
            "10.50.7.0/24 via 10.50.7.0 dev kolach.2 onlink proto 107",
            "fdb 0e:6b:c6:12:00:02 dst 198.18.0.2 dev kolach.2",
            "neigh 10.50.7.0 lladdr 0e:6b:c6:12:00:02 dev kolach.2",
        ]
    );
}

#[tokio::test]
async fn drifted_device_is_adjusted_and_changed_port_recreates_it() {
    let k = kernel();
    let mut b = backend(BackendKind::Vxlan);
    apply(&mut b, &k, &vx(&[B])).await;
    k.links.lock().unwrap().get_mut("kolach.1").unwrap().mtu = 1400;
    k.take_calls();
    apply(&mut b, &k, &vx(&[B])).await;
    assert_eq!(k.take_calls(), ["set-link kolach.1 mtu 1450"]);

    let mut s = vx(&[B]);
    s.port = 4789;
    apply(&mut b, &k, &s).await;
    assert_eq!(
        k.take_calls(),
        [
            "delete-link 100",
            "create-vxlan kolach.1 vni 1 port 4789 local 198.18.0.1 dev eth0 mtu 1450 mac 0e:6b:c6:12:00:01",
            "add 101 10.50.18.0/32",
            "set-link kolach.1 up",
            "fdb 0e:6b:c6:12:00:02 dst 198.18.0.2 dev kolach.1 set",
            "neigh 10.50.7.0 lladdr 0e:6b:c6:12:00:02 dev kolach.1 set",
            "route add 10.50.7.0/24 via 10.50.7.0 dev kolach.1 onlink",
        ]
    );
}

#[tokio::test]
async fn a_foreign_device_with_our_name_fails_the_apply() {
    let k = kernel();
    k.add_link("kolach.1", 9, "dummy", &[]);
    let e = backend(BackendKind::Vxlan)
        .apply(&vx(&[B]), &k)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "kolach.1 exists and is a dummy device, not a vxlan device; left alone"
    );
    assert!(k.take_calls().is_empty());
}

#[tokio::test]
async fn host_gw_routes_reachable_peers_and_reports_the_others() {
    let k = kernel();
    let mut b = backend(BackendKind::HostGw);
    let far = ("10.50.9.0/24", "198.19.5.3", 0);
    let o = apply(&mut b, &k, &snap(BackendType::HostGw, 0, &[B, far])).await;
    assert_eq!(o.routes, 1);
    assert_eq!(
        o.warnings,
        ["host-gw: peer 10.50.9.0/24 (PublicIP 198.19.5.3) is not on a connected subnet of eth0 \
          (198.18.0.0/24); host-gw needs every host on one layer-2 segment; not routed"]
    );
    assert_eq!(
        k.take_calls(),
        ["route add 10.50.7.0/24 via 198.18.0.2 dev eth0"]
    );
    assert_eq!((b.device(), b.mode().as_str()), (Some("eth0"), "kernel"));
    // Still reported on every apply (status), nothing re-programmed.
    let o = apply(&mut b, &k, &snap(BackendType::HostGw, 0, &[B, far])).await;
    assert_eq!(o.warnings.len(), 1);
    assert!(k.take_calls().is_empty());

    let mut s = snap(BackendType::HostGw, 0, &[]);
    s.iface = "eth9".into();
    let e = b.apply(&s, &k).await.unwrap_err();
    assert_eq!(e.to_string(), "underlay interface eth9 does not exist");
}

#[tokio::test]
async fn backend_switch_udp_vxlan_host_gw_alloc_removes_the_old_objects() {
    // What the udp backend leaves: its TUN.
    let k = kernel();
    k.add_link("kolach0", 3, "tun", &["10.50.18.0/16"]);

    apply(&mut backend(BackendKind::Vxlan), &k, &vx(&[B])).await;
    let calls = k.take_calls();
    assert_eq!(calls.last().unwrap(), "delete-link 3", "{calls:?}");
    assert!(k.link_named("kolach0").is_none());

    // vxlan -> host-gw: the route is replaced in one step, then kolach.1 goes.
    apply(
        &mut backend(BackendKind::HostGw),
        &k,
        &snap(BackendType::HostGw, 0, &[B]),
    )
    .await;
    assert_eq!(
        k.take_calls(),
        [
            "route replace 10.50.7.0/24 via 198.18.0.2 dev eth0",
            "delete-link 100"
        ]
    );
    assert_eq!(
        k.objects(),
        ["10.50.7.0/24 via 198.18.0.2 dev eth0 proto 107"]
    );

    // host-gw -> alloc: nothing of kolach's stays.
    apply(
        &mut backend(BackendKind::Alloc),
        &k,
        &snap(BackendType::Alloc, 0, &[B]),
    )
    .await;
    assert_eq!(
        k.take_calls(),
        ["route del 10.50.7.0/24 via 198.18.0.2 dev eth0"]
    );
    assert!(k.objects().is_empty());
    assert_eq!(k.links.lock().unwrap().len(), 1);
    assert_eq!(KOLACH_PROTO, 107);
}

#[test]
fn factory() {
    for kind in [
        BackendKind::Udp,
        BackendKind::Vxlan,
        BackendKind::HostGw,
        BackendKind::Alloc,
    ] {
        let b = backend(kind);
        assert_eq!(b.kind(), kind);
        assert_eq!(b.device().is_some(), kind == BackendKind::Udp);
    }
    assert_eq!(backend(BackendKind::Alloc).mode(), "none");
}

#[tokio::test]
async fn alloc_on_a_clean_kernel_touches_nothing() {
    let k = kernel();
    let mut b = backend(BackendKind::Alloc);
    assert!(apply(&mut b, &k, &snap(BackendType::Alloc, 0, &[B]))
        .await
        .warnings
        .is_empty());
    assert!(k.take_calls().is_empty());
}

fn nets(v: &[&str]) -> Vec<Ipv4Net> {
    v.iter().map(|n| n.parse().unwrap()).collect()
}

/// `s` with pool blocks for its first peer (B) and, if any, its second (C).
fn blocks(mut s: ValidSnapshot, b: &[&str], c: &[&str]) -> ValidSnapshot {
    s.routes[0].blocks = nets(b);
    if let Some(r) = s.routes.get_mut(1) {
        r.blocks = nets(c);
    }
    s
}

#[tokio::test]
async fn vxlan_routes_blocks_via_the_peers_gateway() {
    let k = kernel();
    let mut b = backend(BackendKind::Vxlan);
    apply(&mut b, &k, &vx(&[B])).await;
    k.take_calls();
    let s = blocks(
        vx(&[B, C]),
        &["203.0.113.16/28", "198.51.100.0/26"],
        &["203.0.113.32/28"],
    );
    apply(&mut b, &k, &s).await;
    assert_eq!(
        k.take_calls(),
        [
            "fdb 0e:6b:c6:12:00:03 dst 198.18.0.3 dev kolach.1 set",
            "neigh 10.50.9.0 lladdr 0e:6b:c6:12:00:03 dev kolach.1 set",
            "route add 203.0.113.16/28 via 10.50.7.0 dev kolach.1 onlink",
            "route add 198.51.100.0/26 via 10.50.7.0 dev kolach.1 onlink",
            "route add 10.50.9.0/24 via 10.50.9.0 dev kolach.1 onlink",
            "route add 203.0.113.32/28 via 10.50.9.0 dev kolach.1 onlink",
        ]
    );
    // One neighbour and one FDB entry per peer serve its subnet and blocks.
    assert_eq!(
        k.objects(),
        [
            "10.50.7.0/24 via 10.50.7.0 dev kolach.1 onlink proto 107",
            "10.50.9.0/24 via 10.50.9.0 dev kolach.1 onlink proto 107",
            "198.51.100.0/26 via 10.50.7.0 dev kolach.1 onlink proto 107",
            "203.0.113.16/28 via 10.50.7.0 dev kolach.1 onlink proto 107",
            "203.0.113.32/28 via 10.50.9.0 dev kolach.1 onlink proto 107",
            "fdb 0e:6b:c6:12:00:02 dst 198.18.0.2 dev kolach.1",
            "fdb 0e:6b:c6:12:00:03 dst 198.18.0.3 dev kolach.1",
            "neigh 10.50.7.0 lladdr 0e:6b:c6:12:00:02 dev kolach.1",
            "neigh 10.50.9.0 lladdr 0e:6b:c6:12:00:03 dev kolach.1",
        ]
    );
    // Unchanged: nothing to do. A block given back: only its route goes;
    // a block moving to another peer: its route is replaced in one step.
    apply(&mut b, &k, &s).await;
    assert!(k.take_calls().is_empty());
    let s = blocks(
        vx(&[B, C]),
        &["203.0.113.16/28"],
        &["203.0.113.32/28", "198.51.100.0/26"],
    );
    apply(&mut b, &k, &s).await;
    assert_eq!(
        k.take_calls(),
        ["route replace 198.51.100.0/26 via 10.50.9.0 dev kolach.1 onlink"]
    );
    apply(&mut b, &k, &blocks(vx(&[B, C]), &[], &["203.0.113.32/28"])).await;
    assert_eq!(
        k.take_calls(),
        [
            "route del 198.51.100.0/26 via 10.50.9.0 dev kolach.1 onlink",
            "route del 203.0.113.16/28 via 10.50.7.0 dev kolach.1 onlink",
        ]
    );
}

#[tokio::test]
async fn host_gw_routes_blocks_via_the_peers_public_ip() {
    let k = kernel();
    let mut b = backend(BackendKind::HostGw);
    let far = ("10.50.9.0/24", "198.19.5.3", 0);
    let s = blocks(
        snap(BackendType::HostGw, 0, &[B, far]),
        &["203.0.113.16/28", "198.51.100.0/26"],
        &["203.0.113.32/28"],
    );
    let o = apply(&mut b, &k, &s).await;
    // The peer off the segment is not routed, blocks included.
    assert_eq!((o.routes, o.warnings.len()), (1, 1));
    assert_eq!(
        k.take_calls(),
        [
            "route add 10.50.7.0/24 via 198.18.0.2 dev eth0",
            "route add 203.0.113.16/28 via 198.18.0.2 dev eth0",
            "route add 198.51.100.0/26 via 198.18.0.2 dev eth0",
        ]
    );
    let s = blocks(
        snap(BackendType::HostGw, 0, &[B]),
        &["203.0.113.16/28"],
        &[],
    );
    apply(&mut b, &k, &s).await;
    assert_eq!(
        k.take_calls(),
        ["route del 198.51.100.0/26 via 198.18.0.2 dev eth0"]
    );
    assert_eq!(
        k.objects(),
        [
            "10.50.7.0/24 via 198.18.0.2 dev eth0 proto 107",
            "203.0.113.16/28 via 198.18.0.2 dev eth0 proto 107",
        ]
    );
}

/// The udp backend's kernel side (its device and loop need a real kernel;
/// kernel_tun.rs): what it wants for blocks, carried out on the fake.
#[tokio::test]
async fn udp_routes_blocks_into_the_tun() {
    let k = kernel();
    k.add_link("kolach0", 3, "tun", &["10.50.18.0/16"]);
    let s = blocks(
        snap(BackendType::Udp, 0, &[B, C]),
        &["203.0.113.16/28", "198.51.100.0/26"],
        &["203.0.113.32/28"],
    );
    let d = udp::desired(&s, "kolach0", 3);
    assert!(d.keep_tun && d.vxlan.is_none());
    sync(&k, &d).await.unwrap();
    assert_eq!(
        k.take_calls(),
        [
            "route add 203.0.113.16/28 dev kolach0",
            "route add 198.51.100.0/26 dev kolach0",
            "route add 203.0.113.32/28 dev kolach0",
        ]
    );
    // Again: nothing. A block given back: its route goes. No blocks at
    // all: what the udp backend wanted before blocks, and no route left.
    sync(&k, &d).await.unwrap();
    assert!(k.take_calls().is_empty());
    let s = blocks(s, &["203.0.113.16/28"], &["203.0.113.32/28"]);
    sync(&k, &udp::desired(&s, "kolach0", 3)).await.unwrap();
    assert_eq!(k.take_calls(), ["route del 198.51.100.0/26 dev kolach0"]);
    let s = blocks(s, &[], &[]);
    let d = udp::desired(&s, "kolach0", 3);
    assert_eq!(d, Desired::only_tun("kolach0", true));
    sync(&k, &d).await.unwrap();
    assert_eq!(
        k.take_calls(),
        [
            "route del 203.0.113.16/28 dev kolach0",
            "route del 203.0.113.32/28 dev kolach0",
        ]
    );
    assert!(k.objects().is_empty());
    assert!(k.link_named("kolach0").is_some());
}

#[tokio::test]
async fn switching_from_udp_to_host_gw_moves_the_block_routes() {
    let k = kernel();
    k.add_link("kolach0", 3, "tun", &["10.50.18.0/16"]);
    let udp = blocks(snap(BackendType::Udp, 0, &[B]), &["203.0.113.16/28"], &[]);
    sync(&k, &udp::desired(&udp, "kolach0", 3)).await.unwrap();
    k.take_calls();
    let s = blocks(
        snap(BackendType::HostGw, 0, &[B]),
        &["203.0.113.16/28"],
        &[],
    );
    apply(&mut backend(BackendKind::HostGw), &k, &s).await;
    assert_eq!(
        k.take_calls(),
        [
            "route add 10.50.7.0/24 via 198.18.0.2 dev eth0",
            "route replace 203.0.113.16/28 via 198.18.0.2 dev eth0",
            "delete-link 3",
        ]
    );
    assert_eq!(
        k.objects(),
        [
            "10.50.7.0/24 via 198.18.0.2 dev eth0 proto 107",
            "203.0.113.16/28 via 198.18.0.2 dev eth0 proto 107",
        ]
    );
}

/// `s` exporting to `table`, holding `local` blocks.
fn exporting(mut s: ValidSnapshot, table: u32, local: &[&str]) -> ValidSnapshot {
    s.export_table = table;
    s.local_blocks = nets(local);
    s
}

/// Export is the same for every backend, alloc included, and a switch
/// between them (or a re-apply, as after a restart) leaves the exported
/// routes alone; a given-back block is withdrawn, table 0 withdraws all.
#[tokio::test]
async fn every_backend_exports_and_a_switch_keeps_the_export() {
    let k = kernel();
    k.add_link("lo", 1, "", &["127.0.0.1/8"]);
    let held = ["203.0.113.0/28", "198.51.100.64/28"];
    let exported = [
        "10.50.18.0/24 dev lo proto 107",
        "198.51.100.64/28 dev lo proto 107",
        "203.0.113.0/28 dev lo proto 107",
    ];
    let mut b = backend(BackendKind::Alloc);
    apply(
        &mut b,
        &k,
        &exporting(snap(BackendType::Alloc, 0, &[B]), 119, &held),
    )
    .await;
    assert_eq!(
        k.take_calls(),
        [
            "route add 10.50.18.0/24 dev lo table 119",
            "route add 203.0.113.0/28 dev lo table 119",
            "route add 198.51.100.64/28 dev lo table 119",
        ]
    );
    assert_eq!(k.table(119), exported);
    for (kind, wire) in [
        (BackendKind::HostGw, BackendType::HostGw),
        (BackendKind::Vxlan, BackendType::Vxlan),
        (BackendKind::Alloc, BackendType::Alloc),
    ] {
        let s = exporting(snap(wire, 1, &[B]), 119, &held);
        apply(&mut backend(kind), &k, &s).await;
        let calls = k.take_calls();
        assert!(
            !calls.iter().any(|c| c.contains("table")),
            "{kind:?}: {calls:?}"
        );
        assert_eq!(k.table(119), exported, "{kind:?}");
        // Nothing exported into the main table.
        assert!(!k.objects().iter().any(|o| o.contains("dev lo")));
    }
    let mut b = backend(BackendKind::HostGw);
    let s = exporting(snap(BackendType::HostGw, 0, &[B]), 119, &held[..1]);
    apply(&mut b, &k, &s).await;
    assert_eq!(
        k.take_calls(),
        [
            "route add 10.50.7.0/24 via 198.18.0.2 dev eth0",
            "route del 198.51.100.64/28 dev lo table 119",
        ]
    );
    let s = exporting(snap(BackendType::HostGw, 0, &[B]), 0, &held[..1]);
    apply(&mut b, &k, &s).await;
    assert_eq!(
        k.take_calls(),
        [
            "route del 10.50.18.0/24 dev lo table 119",
            "route del 203.0.113.0/28 dev lo table 119",
        ]
    );
    assert!(k.table(119).is_empty());
    assert_eq!(
        k.objects(),
        ["10.50.7.0/24 via 198.18.0.2 dev eth0 proto 107"]
    );
}

#[tokio::test]
async fn export_problems_are_warnings_not_failures() {
    // No lo device: the backend's part is applied, the export reported.
    let k = kernel();
    let s = exporting(snap(BackendType::HostGw, 0, &[B]), 119, &[]);
    let o = apply(&mut backend(BackendKind::HostGw), &k, &s).await;
    assert_eq!(o.routes, 1);
    assert_eq!(o.warnings, ["export to table 119: there is no lo device"]);
    assert_eq!(
        k.objects(),
        ["10.50.7.0/24 via 198.18.0.2 dev eth0 proto 107"]
    );
}
