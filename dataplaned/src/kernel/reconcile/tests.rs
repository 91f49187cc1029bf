use std::net::Ipv4Addr;

use super::*;
use crate::kernel::kobjects::VxlanAttrs;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn mac(last: u8) -> Mac {
    Mac([0x0e, 0x6b, 198, 18, 0, last])
}
fn route(dst: &str, via: &str, oif: u32, onlink: bool) -> KRoute {
    KRoute {
        dst: dst.parse().unwrap(),
        via: ip(via),
        oif,
        onlink,
    }
}

/// A vxlan peer's three objects on device 5.
fn peer(subnet: &str, public_ip: &str, m: Mac) -> Objects {
    let dst: Ipv4Net = subnet.parse().unwrap();
    Objects {
        routes: vec![route(subnet, &dst.network().to_string(), 5, true)],
        neighs: vec![Neigh {
            dev: 5,
            ip: dst.network(),
            mac: m,
        }],
        fdb: vec![Fdb {
            dev: 5,
            mac: m,
            dst: ip(public_ip),
        }],
    }
}

fn join(parts: &[Objects]) -> Objects {
    let mut o = Objects::default();
    for p in parts {
        o.routes.extend(&p.routes);
        o.neighs.extend(&p.neighs);
        o.fdb.extend(&p.fdb);
    }
    o
}

fn text(ops: &[Op]) -> Vec<String> {
    ops.iter().map(Op::to_string).collect()
}

#[test]
fn nothing_changed_means_no_operations() {
    let want = join(&[
        peer("10.50.7.0/24", "198.18.0.2", mac(2)),
        peer("10.50.9.0/24", "198.18.0.3", mac(3)),
    ]);
    assert!(plan(&want, &want).is_empty());
    assert!(plan(&Objects::default(), &Objects::default()).is_empty());
}

#[test]
fn new_peer_gets_fdb_then_neighbour_then_route() {
    let old = peer("10.50.7.0/24", "198.18.0.2", mac(2));
    let new = peer("10.50.9.0/24", "198.18.0.3", mac(3));
    assert_eq!(
        text(&plan(&join(&[old.clone(), new]), &old)),
        [
            "set fdb 0e:6b:c6:12:00:03 dst 198.18.0.3 dev #5",
            "set neighbour 10.50.9.0 lladdr 0e:6b:c6:12:00:03 dev #5",
            "add route 10.50.9.0/24 via 10.50.9.0 dev #5 onlink",
        ]
    );
}

#[test]
fn removed_peer_loses_route_then_neighbour_then_fdb() {
    let keep = peer("10.50.7.0/24", "198.18.0.2", mac(2));
    let gone = peer("10.50.9.0/24", "198.18.0.3", mac(3));
    assert_eq!(
        text(&plan(&keep, &join(&[keep.clone(), gone]))),
        [
            "delete route 10.50.9.0/24 via 10.50.9.0 dev #5 onlink",
            "delete neighbour 10.50.9.0 lladdr 0e:6b:c6:12:00:03 dev #5",
            "delete fdb 0e:6b:c6:12:00:03 dst 198.18.0.3 dev #5",
        ]
    );
}

#[test]
fn changed_mac_replaces_neighbour_and_moves_fdb_route_untouched() {
    let before = peer("10.50.7.0/24", "198.18.0.2", mac(2));
    let after = peer("10.50.7.0/24", "198.18.0.2", mac(9));
    assert_eq!(
        text(&plan(&after, &before)),
        [
            "set fdb 0e:6b:c6:12:00:09 dst 198.18.0.2 dev #5",
            "set neighbour 10.50.7.0 lladdr 0e:6b:c6:12:00:09 dev #5",
            "delete fdb 0e:6b:c6:12:00:02 dst 198.18.0.2 dev #5",
        ]
    );
}

#[test]
fn changed_public_ip_replaces_only_the_fdb_destination() {
    let before = peer("10.50.7.0/24", "198.18.0.2", mac(2));
    let after = peer("10.50.7.0/24", "198.18.0.22", mac(2));
    assert_eq!(
        text(&plan(&after, &before)),
        ["set fdb 0e:6b:c6:12:00:02 dst 198.18.0.22 dev #5"]
    );
}

#[test]
fn extra_fdb_destinations_are_removed() {
    let want = peer("10.50.7.0/24", "198.18.0.2", mac(2));
    let mut have = want.clone();
    have.fdb.push(Fdb {
        dev: 5,
        mac: mac(2),
        dst: ip("198.18.0.77"),
    });
    assert_eq!(
        text(&plan(&want, &have)),
        ["delete fdb 0e:6b:c6:12:00:02 dst 198.18.0.77 dev #5"]
    );
    // Neither listed destination is right: the first is replaced, the rest go.
    let mut have = want.clone();
    have.fdb = vec![
        Fdb {
            dev: 5,
            mac: mac(2),
            dst: ip("198.18.0.7"),
        },
        Fdb {
            dev: 5,
            mac: mac(2),
            dst: ip("198.18.0.8"),
        },
    ];
    assert_eq!(
        text(&plan(&want, &have)),
        [
            "set fdb 0e:6b:c6:12:00:02 dst 198.18.0.2 dev #5",
            "delete fdb 0e:6b:c6:12:00:02 dst 198.18.0.8 dev #5",
        ]
    );
}

#[test]
fn route_to_another_device_is_replaced_in_one_step() {
    // host-gw -> vxlan: same destination, new next hop and device.
    let want = Objects {
        routes: vec![route("10.50.7.0/24", "10.50.7.0", 5, true)],
        ..Default::default()
    };
    let have = Objects {
        routes: vec![route("10.50.7.0/24", "198.18.0.2", 2, false)],
        ..Default::default()
    };
    assert_eq!(
        text(&plan(&want, &have)),
        ["replace route 10.50.7.0/24 via 10.50.7.0 dev #5 onlink"]
    );
}

fn link(name: &str, index: u32, kind: &str, vxlan: Option<VxlanAttrs>) -> LinkState {
    LinkState {
        index,
        name: name.into(),
        kind: kind.into(),
        mtu: 1450,
        mac: Some(mac(1)),
        up: true,
        vxlan,
    }
}

fn want_link() -> VxlanLink {
    VxlanLink {
        name: "kolach.1".into(),
        vni: 1,
        port: 8472,
        local: ip("198.18.0.1"),
        underlay: Some(2),
        mtu: 1450,
        mac: mac(1),
    }
}

#[test]
fn device_plans() {
    let w = want_link();
    assert_eq!(plan_device(&w, None), DevicePlan::Create);
    let good = link("kolach.1", 5, "vxlan", Some(w.attrs()));
    assert_eq!(
        plan_device(&w, Some(&good)),
        DevicePlan::Keep {
            index: 5,
            change: None
        }
    );

    let mut drifted = good.clone();
    drifted.mtu = 1400;
    drifted.mac = Some(mac(7));
    drifted.up = false;
    assert_eq!(
        plan_device(&w, Some(&drifted)),
        DevicePlan::Keep {
            index: 5,
            change: Some(LinkChange {
                mtu: Some(1450),
                mac: Some(mac(1)),
                up: true
            })
        }
    );

    let mut other_port = good.clone();
    other_port.vxlan.as_mut().unwrap().port = 4789;
    other_port.vxlan.as_mut().unwrap().learning = true;
    assert_eq!(
        plan_device(&w, Some(&other_port)),
        DevicePlan::Recreate {
            index: 5,
            why: "port 4789 != 8472, learning is on".into()
        }
    );

    let dummy = link("kolach.1", 5, "dummy", None);
    assert_eq!(
        plan_device(&w, Some(&dummy)),
        DevicePlan::Foreign {
            kind: "dummy".into()
        }
    );
}

#[test]
fn address_plan() {
    let want: Ipv4Net = "10.50.18.0/32".parse().unwrap();
    assert_eq!(plan_address(want, &[]), (vec![], true));
    assert_eq!(plan_address(want, &[want]), (vec![], false));
    let old: Ipv4Net = "10.50.9.0/32".parse().unwrap();
    assert_eq!(plan_address(want, &[old]), (vec![old], true));
}

#[test]
fn stale_devices_are_other_kolach_vxlan_devices_and_an_unwanted_tun() {
    let attrs = want_link().attrs();
    let links = vec![
        link("eth0", 2, "veth", None),
        link("kolach0", 3, "tun", None),
        link("kolach.1", 5, "vxlan", Some(attrs)),
        link("kolach.2", 6, "vxlan", Some(attrs)),
        link("kolach.3", 7, "dummy", None),
        link("vxlan0", 8, "vxlan", Some(attrs)),
    ];
    let names = |v: Vec<&LinkState>| v.into_iter().map(|l| l.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(stale_devices(&links, Some("kolach.1"), "kolach0", true)),
        ["kolach.2"]
    );
    assert_eq!(
        names(stale_devices(&links, None, "kolach0", false)),
        ["kolach0", "kolach.1", "kolach.2"]
    );
}
