use super::*;

const HOST_MAC: Mac = Mac([0xee, 0, 0, 0, 0, 1]);

fn link(index: u32, name: &str, peer: u32) -> Link {
    Link {
        index,
        name: name.into(),
        mac: Some(Mac([0xee, 0, 0, 0, 0, index as u8])),
        mtu: 1450,
        up: true,
        veth: true,
        peer: Some(peer),
    }
}

fn route(dst: &str, gw: Option<&str>, oif: u32, link_scope: bool, protocol: u8) -> Route {
    Route {
        dst: dst.parse().unwrap(),
        gateway: gw.map(|g| g.parse().unwrap()),
        oif: Some(oif),
        link_scope,
        protocol,
        table: RT_TABLE_MAIN,
    }
}

/// A correct wiring: host end #1 (MAC ee:..:01), pod end #2.
fn good() -> (HostView, PodView) {
    let host = HostView {
        link: Some(link(1, "kolabc", 2)),
        routes: vec![route("10.50.18.2/32", None, 1, true, 108)],
    };
    let pod = PodView {
        link: Some(link(2, "eth0", 1)),
        addresses: vec!["10.50.18.2/32".parse().unwrap()],
        routes: vec![
            route("169.254.1.1/32", None, 2, true, 4),
            route("0.0.0.0/0", Some("169.254.1.1"), 2, false, 4),
        ],
        neighbours: vec![Neighbour {
            ip: GATEWAY,
            mac: Some(HOST_MAC),
            permanent: true,
        }],
    };
    (host, pod)
}

fn expected() -> Expected<'static> {
    Expected {
        host_end: "kolabc",
        ifname: "eth0",
        netns: "/run/netns/p",
        address: "10.50.18.2".parse().unwrap(),
    }
}

#[test]
fn plans() {
    let h = link(1, "kolabc", 2);
    let p = link(2, "eth0", 1);
    let stranger = link(2, "eth0", 9);
    assert_eq!(plan(None, None), Plan::Create);
    assert_eq!(plan(Some(&h), Some(&p)), Plan::Reuse);
    assert_eq!(plan(Some(&h), None), Plan::Replace);
    assert_eq!(plan(Some(&h), Some(&stranger)), Plan::Conflict);
    assert_eq!(plan(None, Some(&p)), Plan::Conflict);
    let mut not_veth = p.clone();
    not_veth.veth = false;
    assert_eq!(plan(Some(&h), Some(&not_veth)), Plan::Conflict);
}

#[test]
fn good_wiring_passes() {
    let (h, p) = good();
    assert_eq!(check(&expected(), &h, &p), Ok(()));
}

#[test]
fn each_mismatch_is_named() {
    type Break = fn(&mut HostView, &mut PodView);
    let cases: [(Break, &str); 10] = [
        (|h, _| h.link = None, "host end kolabc is missing"),
        (
            |h, _| h.link.as_mut().unwrap().up = false,
            "host end kolabc is down",
        ),
        (
            |h, _| h.routes[0].protocol = 4,
            "the host has no route 10.50.18.2/32 dev kolabc scope link proto 108",
        ),
        (|_, p| p.link = None, "eth0 is missing in /run/netns/p"),
        (
            |_, p| p.link.as_mut().unwrap().peer = Some(7),
            "eth0 in /run/netns/p is not the peer of host end kolabc",
        ),
        (
            |_, p| p.addresses.clear(),
            "eth0 in /run/netns/p does not hold 10.50.18.2/32",
        ),
        (
            |_, p| {
                p.routes.remove(0);
            },
            "/run/netns/p has no route 169.254.1.1 dev eth0 scope link",
        ),
        (
            |_, p| p.routes[1].gateway = None,
            "/run/netns/p has no route default via 169.254.1.1 dev eth0",
        ),
        (
            |_, p| p.neighbours[0].permanent = false,
            "/run/netns/p has no permanent neighbour 169.254.1.1 lladdr ee:00:00:00:00:01 on eth0",
        ),
        (
            |_, p| p.neighbours[0].mac = Some(Mac([2, 0, 0, 0, 0, 9])),
            "/run/netns/p has no permanent neighbour 169.254.1.1 lladdr ee:00:00:00:00:01 on eth0",
        ),
    ];
    for (breaks, want) in cases {
        let (mut h, mut p) = good();
        breaks(&mut h, &mut p);
        assert_eq!(check(&expected(), &h, &p), Err(want.to_string()));
    }
}

#[test]
fn routes_in_other_tables_do_not_count() {
    let (mut h, p) = good();
    h.routes[0].table = 119;
    assert!(check(&expected(), &h, &p).is_err());
}
