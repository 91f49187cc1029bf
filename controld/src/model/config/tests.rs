//! The config table tests: good configs with their defaults, bad ones with
//! the exact one-line message.

use super::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ok(json: &str) -> Parsed {
    parse(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
}

#[test]
fn good_configs() {
    struct Case {
        json: &'static str,
        len: u8,
        min: &'static str,
        max: &'static str,
        backend: BackendConfig,
        warnings: usize,
    }
    let udp = BackendConfig::udp();
    let cases = [
        Case {
            json: r#"{"Network":"10.50.0.0/16"}"#,
            len: 24,
            min: "10.50.1.0/24",
            max: "10.50.255.0/24",
            backend: udp.clone(),
            warnings: 0,
        },
        Case {
            json: r#"{"Network":"10.50.0.0/22"}"#,
            len: 24,
            min: "10.50.1.0/24",
            max: "10.50.3.0/24",
            backend: udp.clone(),
            warnings: 0,
        },
        Case {
            json: r#"{"Network":"10.50.0.0/23"}"#,
            len: 25,
            min: "10.50.0.128/25",
            max: "10.50.1.128/25",
            backend: udp.clone(),
            warnings: 0,
        },
        Case {
            json: r#"{"Network":"10.50.0.0/16","SubnetLen":26,"SubnetMin":"10.50.4.0","SubnetMax":"10.50.9.192/26"}"#,
            len: 26,
            min: "10.50.4.0/26",
            max: "10.50.9.192/26",
            backend: udp.clone(),
            warnings: 0,
        },
        Case {
            json: r#"{"Network":"10.50.0.0/16","Backend":{"Type":"udp","Port":9000}}"#,
            len: 24,
            min: "10.50.1.0/24",
            max: "10.50.255.0/24",
            backend: BackendConfig {
                kind: BackendKind::Udp,
                port: 9000,
                vni: 0,
                route_tables: Vec::new(),
            },
            warnings: 0,
        },
        Case {
            json: r#"{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan"}}"#,
            len: 24,
            min: "10.50.1.0/24",
            max: "10.50.255.0/24",
            backend: BackendConfig {
                kind: BackendKind::Vxlan,
                port: 8472,
                vni: 1,
                route_tables: Vec::new(),
            },
            warnings: 0,
        },
        Case {
            json: r#"{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan","VNI":42,"Port":4789}}"#,
            len: 24,
            min: "10.50.1.0/24",
            max: "10.50.255.0/24",
            backend: BackendConfig {
                kind: BackendKind::Vxlan,
                port: 4789,
                vni: 42,
                route_tables: Vec::new(),
            },
            warnings: 0,
        },
        Case {
            json: r#"{"Network":"10.50.0.0/16","Backend":{"Type":"host-gw"}}"#,
            len: 24,
            min: "10.50.1.0/24",
            max: "10.50.255.0/24",
            backend: BackendConfig {
                kind: BackendKind::HostGw,
                port: 0,
                vni: 0,
                route_tables: Vec::new(),
            },
            warnings: 0,
        },
        Case {
            json: r#"{"Network":"10.50.0.0/16","Backend":{"Type":"alloc"}}"#,
            len: 24,
            min: "10.50.1.0/24",
            max: "10.50.255.0/24",
            backend: BackendConfig {
                kind: BackendKind::Alloc,
                port: 0,
                vni: 0,
                route_tables: Vec::new(),
            },
            warnings: 0,
        },
        Case {
            json: r#"{"Network":"10.50.0.0/16","Backend":{"Type":"aws-vpc"}}"#,
            len: 24,
            min: "10.50.1.0/24",
            max: "10.50.255.0/24",
            backend: BackendConfig {
                kind: BackendKind::AwsVpc,
                port: 0,
                vni: 0,
                route_tables: Vec::new(),
            },
            warnings: 0,
        },
        Case {
            json: r#"{"Network":"10.50.0.0/16","Backend":{"Type":"aws-vpc","RouteTableID":"rtb-0a1b2c3d"}}"#,
            len: 24,
            min: "10.50.1.0/24",
            max: "10.50.255.0/24",
            backend: BackendConfig {
                kind: BackendKind::AwsVpc,
                port: 0,
                vni: 0,
                route_tables: vec!["rtb-0a1b2c3d".into()],
            },
            warnings: 0,
        },
        Case {
            json: r#"{"Network":"10.50.0.0/16","Backend":{"Type":"aws-vpc","RouteTableID":["rtb-0a1b2c3d","rtb-0123456789abcdef0"]}}"#,
            len: 24,
            min: "10.50.1.0/24",
            max: "10.50.255.0/24",
            backend: BackendConfig {
                kind: BackendKind::AwsVpc,
                port: 0,
                vni: 0,
                route_tables: vec!["rtb-0a1b2c3d".into(), "rtb-0123456789abcdef0".into()],
            },
            warnings: 0,
        },
        // kolach's original key names, one warning each.
        Case {
            json: r#"{"Network":"10.0.0.0/8","HostSubnet":20,"FirstIP":"10.1.0.0","LastIP":"10.2.0.0"}"#,
            len: 20,
            min: "10.1.0.0/20",
            max: "10.2.0.0/20",
            backend: udp.clone(),
            warnings: 3,
        },
        // Both spellings: the new one wins, with a warning saying so.
        Case {
            json: r#"{"Network":"10.50.0.0/16","HostSubnet":20,"SubnetLen":25}"#,
            len: 25,
            min: "10.50.0.128/25",
            max: "10.50.255.128/25",
            backend: udp.clone(),
            warnings: 1,
        },
        Case {
            json: r#"{"Network":"10.50.0.0/16","Frobnicate":true,"EnableIPv4":true}"#,
            len: 24,
            min: "10.50.1.0/24",
            max: "10.50.255.0/24",
            backend: udp.clone(),
            warnings: 1,
        },
    ];
    for c in cases {
        let p = ok(c.json);
        assert_eq!(p.config.subnet_len, c.len, "{}", c.json);
        assert_eq!(p.config.subnet_min, net(c.min), "{}", c.json);
        assert_eq!(p.config.subnet_max, net(c.max), "{}", c.json);
        assert_eq!(p.config.backend, c.backend, "{}", c.json);
        assert_eq!(p.warnings.len(), c.warnings, "{}: {:?}", c.json, p.warnings);
    }
}

#[test]
fn bad_configs_name_key_value_and_rule() {
    let cases = [
        (r#"{"Network":"10.50.0.0/16","SubnetLen":40}"#,
         "config: SubnetLen 40 is not in 18..=30 for Network 10.50.0.0/16"),
        (r#"{"Network":"10.50.0.0/16","SubnetLen":16}"#,
         "config: SubnetLen 16 is not in 18..=30 for Network 10.50.0.0/16"),
        (r#"{"Network":"10.50.0.0/16","HostSubnet":31}"#,
         "config: HostSubnet 31 is not in 18..=30 for Network 10.50.0.0/16"),
        (r#"{"Network":"10.50.0.0/16","SubnetLen":"24"}"#,
         "config: SubnetLen \"24\" must be a whole number (a prefix length such as 24), not a string"),
        (r#"{"Network":"10.50.0.0/16""#,
         "config: not valid JSON: EOF while parsing an object at line 1 column 25"),
        ("", "config: not valid JSON: EOF while parsing a value at line 1 column 0"),
        (r#"["10.50.0.0/16"]"#, "config: expected a JSON object, got an array"),
        (r#"{}"#,
         "config: Network is missing (an IPv4 CIDR such as \"10.50.0.0/16\" is required)"),
        (r#"{"Network":16}"#,
         "config: Network 16 must be a string such as \"10.50.0.0/16\", not a number"),
        (r#"{"Network":"10.50.0.0"}"#,
         "config: Network \"10.50.0.0\" is not a CIDR such as \"10.50.0.0/16\""),
        (r#"{"Network":"fd00::/64"}"#,
         "config: Network fd00::/64 is IPv6; kolach supports IPv4 only"),
        (r#"{"Network":"10.50.3.0/16"}"#,
         "config: Network 10.50.3.0/16 has host bits set (did you mean 10.50.0.0/16?)"),
        (r#"{"Network":"10.50.0.0/29"}"#,
         "config: Network 10.50.0.0/29 is too small: it needs a prefix of /28 or shorter to hold at least 4 subnets of /30 or larger"),
        (r#"{"Network":"10.50.0.0/16","SubnetMin":"10.60.1.0"}"#,
         "config: SubnetMin 10.60.1.0 is not inside Network 10.50.0.0/16"),
        (r#"{"Network":"10.50.0.0/16","SubnetMax":"10.50.1.5"}"#,
         "config: SubnetMax 10.50.1.5 is not aligned to SubnetLen 24 (the subnet containing it starts at 10.50.1.0)"),
        (r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.9.0","SubnetMax":"10.50.3.0"}"#,
         "config: SubnetMin 10.50.9.0 is after SubnetMax 10.50.3.0"),
        (r#"{"Network":"10.50.0.0/16","FirstIP":"10.50.9.0","LastIP":"10.50.3.0"}"#,
         "config: FirstIP 10.50.9.0 is after LastIP 10.50.3.0"),
        (r#"{"Network":"10.50.0.0/16","SubnetMin":"ten"}"#,
         "config: SubnetMin \"ten\" is not an IPv4 address"),
        (r#"{"Network":"10.50.0.0/16","SubnetMin":7}"#,
         "config: SubnetMin 7 must be a string such as \"10.50.1.0\", not a number"),
        (r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.4.0/25"}"#,
         "config: SubnetMin 10.50.4.0/25 has prefix length /25 but SubnetLen is 24"),
        (r#"{"Network":"10.50.0.0/16","Backend":{"Type":"gre"}}"#,
         "config: Backend.Type \"gre\" is not one of udp, vxlan, host-gw, alloc, aws-vpc"),
        (r#"{"Network":"10.50.0.0/16","Backend":{"Type":7}}"#,
         "config: Backend.Type 7 must be a string (udp, vxlan, host-gw, alloc or aws-vpc), not a number"),
        (r#"{"Network":"10.50.0.0/16","Backend":{"Type":"aws-vpc","RouteTableID":"rtb-XYZ"}}"#,
         "config: Backend.RouteTableID \"rtb-XYZ\" is not a route table ID: \"rtb-\" and 1 to 17 lowercase hex digits (rtb-0a1b2c3d)"),
        (r#"{"Network":"10.50.0.0/16","Backend":{"Type":"aws-vpc","RouteTableID":"vpc-0a1b2c3d"}}"#,
         "config: Backend.RouteTableID \"vpc-0a1b2c3d\" is not a route table ID: \"rtb-\" and 1 to 17 lowercase hex digits (rtb-0a1b2c3d)"),
        (r#"{"Network":"10.50.0.0/16","Backend":{"Type":"aws-vpc","RouteTableID":["rtb-0a1b2c3d",""]}}"#,
         "config: Backend.RouteTableID \"\" is not a route table ID: \"rtb-\" and 1 to 17 lowercase hex digits (rtb-0a1b2c3d)"),
        (r#"{"Network":"10.50.0.0/16","Backend":{"Type":"aws-vpc","RouteTableID":7}}"#,
         "config: Backend.RouteTableID 7 must be a string such as \"rtb-0a1b2c3d\" or a list of them, not a number"),
        (r#"{"Network":"10.50.0.0/16","Backend":{"Type":"aws-vpc","RouteTableID":["rtb-0a1b2c3d","rtb-0a1b2c3d"]}}"#,
         "config: Backend.RouteTableID [\"rtb-0a1b2c3d\",\"rtb-0a1b2c3d\"] lists \"rtb-0a1b2c3d\" twice; name each table once"),
        (r#"{"Network":"10.50.0.0/16","Backend":"udp"}"#,
         "config: Backend \"udp\" must be an object such as {\"Type\": \"udp\"}, not a string"),
        (r#"{"Network":"10.50.0.0/16","Backend":{"Type":"udp","Port":70000}}"#,
         "config: Backend.Port 70000 is not in 1..=65535"),
        (r#"{"Network":"10.50.0.0/16","Backend":{"Type":"udp","Port":"8285"}}"#,
         "config: Backend.Port \"8285\" must be a whole number, not a string"),
        (r#"{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}"#,
         "config: Backend.VNI 16777216 is not in 0..=16777215"),
        (r#"{"Network":"10.50.0.0/16","ExportTable":254}"#,
         "config: ExportTable 254 is the kernel's main table; use another table (default 119) or 0 for none"),
        (r#"{"Network":"10.50.0.0/16","ExportTable":253}"#,
         "config: ExportTable 253 is the kernel's default table; use another table (default 119) or 0 for none"),
        (r#"{"Network":"10.50.0.0/16","ExportTable":255}"#,
         "config: ExportTable 255 is the kernel's local table; use another table (default 119) or 0 for none"),
        (r#"{"Network":"10.50.0.0/16","ExportTable":-1}"#,
         "config: ExportTable -1 is not in 0..=4294967295 (0 turns export off)"),
        (r#"{"Network":"10.50.0.0/16","ExportTable":4294967296}"#,
         "config: ExportTable 4294967296 is not in 0..=4294967295 (0 turns export off)"),
        (r#"{"Network":"10.50.0.0/16","ExportTable":"119"}"#,
         "config: ExportTable \"119\" must be a whole number (a routing table such as 119, or 0 for none), not a string"),
        (r#"{"Network":"10.50.0.0/16","ExportTable":119.5}"#,
         "config: ExportTable 119.5 must be a whole number (a routing table such as 119, or 0 for none), not a number"),
    ];
    for (json, want) in cases {
        match parse(json.as_bytes()) {
            Ok(p) => panic!("{json} was accepted: {p:?}"),
            Err(e) => assert_eq!(e.to_string(), want, "{json}"),
        }
    }
}

#[test]
fn export_table_defaults_to_119_and_0_turns_it_off() {
    let table = |json: &str| ok(json).config.export_table;
    assert_eq!(table(r#"{"Network":"10.50.0.0/16"}"#), DEFAULT_EXPORT_TABLE);
    assert_eq!(DEFAULT_EXPORT_TABLE, 119);
    assert_eq!(
        table(r#"{"Network":"10.50.0.0/16","ExportTable":null}"#),
        119
    );
    assert_eq!(table(r#"{"Network":"10.50.0.0/16","ExportTable":0}"#), 0);
    assert_eq!(
        table(r#"{"Network":"10.50.0.0/16","ExportTable":100}"#),
        100
    );
    assert_eq!(
        table(r#"{"Network":"10.50.0.0/16","ExportTable":252}"#),
        252
    );
    assert_eq!(
        table(r#"{"Network":"10.50.0.0/16","ExportTable":4294967295}"#),
        u32::MAX
    );
    // A known key: no "unknown key" warning.
    assert!(ok(r#"{"Network":"10.50.0.0/16","ExportTable":7}"#)
        .warnings
        .is_empty());
}

#[test]
fn legacy_warnings_say_which_key_wins() {
    let p = ok(r#"{"Network":"10.50.0.0/16","FirstIP":"10.50.2.0","SubnetMin":"10.50.3.0"}"#);
    assert_eq!(p.config.subnet_min, net("10.50.3.0/24"));
    assert_eq!(
        p.warnings,
        vec!["config: both FirstIP and SubnetMin are set; SubnetMin wins (FirstIP is kolach's old name for it)"]
    );
}

#[test]
fn allows_checks_size_network_and_bounds() {
    let c =
        ok(r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.4.0","SubnetMax":"10.50.8.0"}"#).config;
    assert!(c.allows(net("10.50.4.0/24")));
    assert!(c.allows(net("10.50.8.0/24")));
    assert!(!c.allows(net("10.50.3.0/24")));
    assert!(!c.allows(net("10.50.9.0/24")));
    assert!(!c.allows(net("10.50.5.0/25")));
    assert!(!c.allows(net("10.51.5.0/24")));
    assert!(c.fits_network(net("10.50.200.0/24")));
    assert!(!c.fits_network(net("10.50.200.0/26")));
}

/// Mangled input never panics: every byte sequence is either a config or
/// a one-line error.
#[test]
fn mangled_input_never_panics() {
    use rand::{Rng, SeedableRng};
    let seed = br#"{"Network":"10.50.0.0/16","SubnetLen":26,"SubnetMin":"10.50.4.0","SubnetMax":"10.50.9.192","HostSubnet":25,"Backend":{"Type":"vxlan","VNI":7,"Port":4789}}"#;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..20_000 {
        let mut b = seed.to_vec();
        for _ in 0..rng.random_range(1..6) {
            let i = rng.random_range(0..b.len());
            match rng.random_range(0..3) {
                0 => b[i] = rng.random(),
                1 => {
                    b.remove(i);
                }
                _ => b.insert(i, b"0123456789/.,:\"-{}[]"[rng.random_range(0..16)]),
            }
        }
        if let Err(e) = parse(&b) {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}
