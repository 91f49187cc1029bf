use super::*;
use kolach_proto::netpb::{IpAddress, IpNetwork};

fn net(s: &str) -> Option<IpNetwork> {
    Some(s.parse::<Ipv4Net>().unwrap().into())
}
fn ip(s: &str) -> Option<IpAddress> {
    Some(s.parse::<Ipv4Addr>().unwrap().into())
}

pub fn good() -> pb::Snapshot {
    pb::Snapshot {
        version: Some(pb::SnapshotVersion {
            epoch: 7,
            generation: 1,
            etcd_revision: 100,
        }),
        backend: Some(pb::Backend {
            r#type: BackendType::Udp as i32,
            port: 8285,
            vni: 0,
        }),
        network: net("10.50.0.0/16"),
        local_subnet: net("10.50.18.0/24"),
        public_ip: ip("198.18.0.1"),
        iface: "eth0".into(),
        mtu: 1472,
        local_vtep_mac: vec![],
        local_blocks: vec![],
        export_table: 119,
        ip_masq: true,
        iptables_forward_rules: true,
        routes: vec![pb::Route {
            subnet: net("10.50.7.0/24"),
            public_ip: ip("198.18.0.2"),
            vtep_mac: vec![],
            blocks: vec![],
        }],
    }
}

#[test]
fn accepts_a_good_snapshot() {
    let v = validate(&good()).unwrap();
    assert_eq!(v.backend, BackendKind::Udp);
    assert_eq!(v.port, 8285);
    assert_eq!(v.device_address().to_string(), "10.50.18.0/16");
    assert_eq!(v.routes.len(), 1);
    assert_eq!(v.public_ip, Some(Ipv4Addr::new(198, 18, 0, 1)));
}

#[test]
fn default_port_when_zero() {
    let mut s = good();
    s.backend.as_mut().unwrap().port = 0;
    assert_eq!(validate(&s).unwrap().port, DEFAULT_UDP_PORT);
}

fn reason(f: impl FnOnce(&mut pb::Snapshot)) -> String {
    let mut s = good();
    f(&mut s);
    validate(&s).unwrap_err().to_string()
}

#[test]
fn errors_name_the_field() {
    assert_eq!(reason(|s| s.version = None), "version is missing");
    assert_eq!(reason(|s| s.backend = None), "backend is missing");
    assert_eq!(
        reason(|s| s.backend.as_mut().unwrap().r#type = 0),
        "backend.type: is unspecified"
    );
    assert_eq!(
        reason(|s| s.backend.as_mut().unwrap().r#type = 42),
        "backend.type: 42 is unknown"
    );
    assert_eq!(
        reason(|s| s.backend.as_mut().unwrap().port = 70000),
        "backend.port: 70000 is not a UDP port"
    );
    assert_eq!(reason(|s| s.network = None), "network is missing");
    assert_eq!(
        reason(|s| s.network = Some(IpNetwork {
            addr: Some(IpAddress { addr: vec![1, 2] }),
            prefix_len: 8
        })),
        "network: address has 2 bytes, expected 4 or 16"
    );
    assert_eq!(
        reason(|s| s.local_subnet = net("10.60.1.0/24")),
        "local_subnet: 10.60.1.0/24 is not inside network 10.50.0.0/16"
    );
    assert_eq!(
        reason(|s| s.local_subnet = net("10.50.18.1/24")),
        "local_subnet: 10.50.18.1/24 has host bits set (expected 10.50.18.0/24)"
    );
    assert_eq!(reason(|s| s.public_ip = None), "public_ip is missing");
    assert_eq!(
        reason(|s| s.public_ip = Some("fd00::1".parse::<std::net::IpAddr>().unwrap().into())),
        "public_ip: expected an IPv4 address"
    );
    assert_eq!(reason(|s| s.mtu = 0), "mtu: 0 is not in 68..=65535");
    assert_eq!(
        reason(|s| s.routes[0].subnet = net("10.50.18.0/24")),
        "routes[0].subnet: 10.50.18.0/24 is this host's own subnet"
    );
    assert_eq!(
        reason(|s| s.routes[0].public_ip = None),
        "routes[0].public_ip is missing"
    );
    assert_eq!(
        reason(|s| {
            let r = s.routes[0].clone();
            s.routes.push(r);
        }),
        "routes[1].subnet: 10.50.7.0/24 is listed twice"
    );
}

pub fn vxlan() -> pb::Snapshot {
    let mut s = good();
    let b = s.backend.as_mut().unwrap();
    b.r#type = BackendType::Vxlan as i32;
    b.port = 0;
    b.vni = 0;
    s.mtu = 1450;
    s.local_vtep_mac = vec![0x0e, 0x6b, 198, 18, 0, 1];
    s.routes[0].vtep_mac = vec![0x0e, 0x6b, 198, 18, 0, 2];
    s
}

#[test]
fn vxlan_defaults_and_macs() {
    let v = validate(&vxlan()).unwrap();
    assert_eq!((v.port, v.vni), (DEFAULT_VXLAN_PORT, DEFAULT_VNI));
    assert_eq!(v.local_vtep_mac.unwrap().to_string(), "0e:6b:c6:12:00:01");
    assert_eq!(
        v.routes[0].vtep_mac.unwrap().to_string(),
        "0e:6b:c6:12:00:02"
    );
    // udp ignores MACs.
    assert_eq!(validate(&good()).unwrap().local_vtep_mac, None);
}

#[test]
fn vxlan_errors_name_the_field() {
    let reason = |f: fn(&mut pb::Snapshot)| {
        let mut s = vxlan();
        f(&mut s);
        validate(&s).unwrap_err().to_string()
    };
    assert_eq!(
        reason(|s| s.local_vtep_mac.clear()),
        "local_vtep_mac: expected 6 bytes, got 0"
    );
    assert_eq!(
        reason(|s| s.local_vtep_mac = vec![1, 0, 0x5e, 0, 0, 1]),
        "local_vtep_mac: 01:00:5e:00:00:01 is not a unicast address"
    );
    assert_eq!(
        reason(|s| s.routes[0].vtep_mac = vec![1, 2, 3]),
        "routes[0].vtep_mac: expected 6 bytes, got 3"
    );
    assert_eq!(
        reason(|s| s.backend.as_mut().unwrap().vni = 1 << 24),
        "backend.vni: 16777216 is not in 1..=16777215"
    );
    assert_eq!(reason(|s| s.public_ip = None), "public_ip is missing");
}

#[test]
fn host_gw_needs_an_iface_not_a_public_ip() {
    let mut s = good();
    s.backend.as_mut().unwrap().r#type = BackendType::HostGw as i32;
    s.public_ip = None;
    s.mtu = 0;
    assert_eq!(validate(&s).unwrap().backend, BackendKind::HostGw);
    s.iface.clear();
    assert_eq!(validate(&s).unwrap_err().to_string(), "iface is missing");
}

#[test]
fn alloc_needs_no_public_ip_or_mtu() {
    let mut s = good();
    s.backend.as_mut().unwrap().r#type = BackendType::Alloc as i32;
    s.public_ip = None;
    s.mtu = 0;
    assert_eq!(validate(&s).unwrap().backend, BackendKind::Alloc);
}

/// `good()` with blocks: B (10.50.7.0/24) holds two, a second peer C
/// (10.50.9.0/24) one, this host one.
pub fn with_blocks() -> pb::Snapshot {
    let mut s = good();
    s.local_blocks = vec![net("203.0.113.0/28").unwrap()];
    s.routes[0].blocks = vec![
        net("203.0.113.16/28").unwrap(),
        net("198.51.100.0/26").unwrap(),
    ];
    s.routes.push(pb::Route {
        subnet: net("10.50.9.0/24"),
        public_ip: ip("198.18.0.3"),
        vtep_mac: vec![],
        blocks: vec![net("203.0.113.32/28").unwrap()],
    });
    s
}

#[test]
fn blocks_are_converted() {
    let v = validate(&with_blocks()).unwrap();
    let nets = |v: &[&str]| -> Vec<Ipv4Net> { v.iter().map(|n| n.parse().unwrap()).collect() };
    assert_eq!(v.local_blocks, nets(&["203.0.113.0/28"]));
    assert_eq!(
        v.routes[0].blocks,
        nets(&["203.0.113.16/28", "198.51.100.0/26"])
    );
    assert_eq!(v.routes[1].blocks, nets(&["203.0.113.32/28"]));
    // And reach the packet loop's table, each with its holder.
    let t = v.forward_table();
    assert_eq!(t.local_blocks, v.local_blocks);
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    assert_eq!(
        t.routes.lookup_block(ip("198.51.100.1")),
        Some(ip("198.18.0.2"))
    );
    assert_eq!(
        t.routes.lookup_block(ip("203.0.113.40")),
        Some(ip("198.18.0.3"))
    );
    assert_eq!(t.routes.lookup_block(ip("203.0.113.1")), None);
    // No blocks: empty lists, as before.
    let v = validate(&good()).unwrap();
    assert!(v.local_blocks.is_empty() && v.routes[0].blocks.is_empty());
}

#[test]
fn exported_are_the_own_subnet_and_blocks() {
    let v = validate(&with_blocks()).unwrap();
    assert_eq!(v.export_table, 119);
    let want: Vec<Ipv4Net> = ["10.50.18.0/24", "203.0.113.0/28"]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(v.exported(), want);
    // An older controld never sets the table: no export.
    let mut s = with_blocks();
    s.export_table = 0;
    assert_eq!(validate(&s).unwrap().export_table, 0);
    s.export_table = 4_000_000_000;
    assert_eq!(validate(&s).unwrap().export_table, 4_000_000_000);
}

#[test]
fn export_table_refuses_the_kernels_own_tables() {
    for t in [253, 254, 255] {
        assert_eq!(
            reason(|s| s.export_table = t),
            format!("export_table: {t} is a table the kernel looks up itself (default 253, main 254, local 255)")
        );
    }
}

#[test]
fn block_errors_name_the_field() {
    let reason = |f: fn(&mut pb::Snapshot)| {
        let mut s = with_blocks();
        f(&mut s);
        validate(&s).unwrap_err().to_string()
    };
    type Case = (fn(&mut pb::Snapshot), &'static str);
    let cases: [Case; 12] = [
        (
            |s| s.routes[0].blocks[1] = "fd00::/64".parse::<ipnet::IpNet>().unwrap().into(),
            "routes[0].blocks[1]: expected an IPv4 network",
        ),
        (
            |s| s.local_blocks[0] = net("203.0.113.1/28").unwrap(),
            "local_blocks[0]: 203.0.113.1/28 has host bits set (expected 203.0.113.0/28)",
        ),
        (
            |s| s.routes[0].blocks[0] = net("10.50.200.0/28").unwrap(),
            "routes[0].blocks[0]: 10.50.200.0/28 overlaps network 10.50.0.0/16",
        ),
        // Inside a peer's subnet (so inside the Network).
        (
            |s| s.routes[1].blocks[0] = net("10.50.7.16/28").unwrap(),
            "routes[1].blocks[0]: 10.50.7.16/28 overlaps network 10.50.0.0/16",
        ),
        // Holding the whole Network.
        (
            |s| s.local_blocks[0] = net("10.0.0.0/8").unwrap(),
            "local_blocks[0]: 10.0.0.0/8 overlaps network 10.50.0.0/16",
        ),
        (
            |s| s.routes[0].blocks[0] = net("0.0.0.0/0").unwrap(),
            "routes[0].blocks[0]: 0.0.0.0/0 overlaps network 10.50.0.0/16",
        ),
        // A peer's block twice, or twice in one peer.
        (
            |s| s.routes[1].blocks[0] = net("203.0.113.16/28").unwrap(),
            "routes[1].blocks[0]: 203.0.113.16/28 is listed twice (also routes[0].blocks[0])",
        ),
        (
            |s| s.routes[0].blocks[1] = net("203.0.113.16/28").unwrap(),
            "routes[0].blocks[1]: 203.0.113.16/28 is listed twice (also routes[0].blocks[0])",
        ),
        // Ours, also claimed by a peer.
        (
            |s| s.routes[1].blocks[0] = net("203.0.113.0/28").unwrap(),
            "routes[1].blocks[0]: 203.0.113.0/28 is listed twice (also local_blocks[0])",
        ),
        // Overlaps, either way round, across peers and with ours.
        (
            |s| s.routes[1].blocks[0] = net("203.0.113.0/26").unwrap(),
            "routes[1].blocks[0]: 203.0.113.0/26 overlaps local_blocks[0] 203.0.113.0/28",
        ),
        (
            |s| s.local_blocks[0] = net("198.51.100.32/27").unwrap(),
            "routes[0].blocks[1]: 198.51.100.0/26 overlaps local_blocks[0] 198.51.100.32/27",
        ),
        // A big block holding two of another peer's: the first by address
        // is named.
        (
            |s| {
                s.routes[0].blocks[0] = net("203.0.113.128/25").unwrap();
                s.routes[1].blocks = vec![
                    net("203.0.113.160/28").unwrap(),
                    net("203.0.113.144/28").unwrap(),
                ];
                s.local_blocks = vec![net("203.0.113.250/31").unwrap()];
            },
            "routes[1].blocks[1]: 203.0.113.144/28 overlaps routes[0].blocks[0] 203.0.113.128/25",
        ),
    ];
    for (f, want) in cases {
        assert_eq!(reason(f), want);
    }
}

#[test]
fn firewall_settings_are_carried_and_an_old_controld_means_off() {
    let v = validate(&good()).unwrap();
    assert!(v.ip_masq && v.forward_rules);
    // An older controld sets neither field: no masquerade, FORWARD untouched.
    let mut s = good();
    s.ip_masq = false;
    s.iptables_forward_rules = false;
    let v = validate(&s).unwrap();
    assert!(!v.ip_masq && !v.forward_rules);
}
