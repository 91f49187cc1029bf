use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use super::*;

fn parse(line: &str, env: &[(&str, &str)]) -> Result<(Flags, Vec<Note>), String> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let get = |k: &str| env.get(k).cloned();
    let args = std::iter::once("kolach-controld")
        .chain(line.split_whitespace())
        .map(OsString::from);
    let cl = command_line(args, &get).map_err(|e| e.to_string())?;
    // clap reads KOLACH_ variables from the process environment, which
    // these tests leave alone: the table only sets FLANNELD_ ones.
    let flags = Flags::try_parse_from(cl.args).map_err(|e| e.to_string())?;
    Ok((flags, cl.notes))
}

fn ok(line: &str) -> Flags {
    parse(line, &[]).unwrap_or_else(|e| panic!("{line}: {e}")).0
}

/// What a parsed command line must satisfy.
type Check = fn(&Flags) -> bool;

#[test]
fn flannel_command_lines() {
    let f = ok("-etcd-endpoints=http://a:2379,http://b:2379 -etcd-prefix /p -iface=eth0 -ip-masq -subnet-file=/run/flannel/subnet.env");
    assert_eq!(f.etcd_endpoints, ["http://a:2379", "http://b:2379"]);
    assert_eq!(f.etcd_prefix, "/p");
    assert_eq!(f.iface.as_deref(), Some("eth0"));
    assert!(f.ip_masq);
    assert_eq!(
        f.flannel_subnet_file,
        Some(PathBuf::from("/run/flannel/subnet.env"))
    );
    assert_eq!(f.subnet_file, PathBuf::from("/run/kolach/subnet.env"));

    let cases: &[(&str, Check)] = &[
        ("-ip-masq=true", |f| f.ip_masq),
        ("-ip-masq=false", |f| !f.ip_masq),
        ("--ip-masq", |f| f.ip_masq),
        ("-iptables-forward-rules=false", |f| {
            !f.iptables_forward_rules
        }),
        ("-iptables-forward-rules", |f| f.iptables_forward_rules),
        ("--iptables-forward-rules false", |f| {
            !f.iptables_forward_rules
        }),
        ("-v=0", |f| f.verbose == 0),
        ("-v=2", |f| f.verbose == 1),
        ("-v=10", |f| f.verbose == 2),
        ("-vv", |f| f.verbose == 2),
        ("-etcd-endpoint http://s:4001", |f| {
            f.etcd_endpoints == ["http://s:4001"]
        }),
        ("-etcd-certfile=c.pem -etcd-keyfile=k.pem", |f| {
            f.etcd_keyfile.is_some()
        }),
        ("-etcd-username u -etcd-password p", |f| {
            f.etcd_password.as_deref() == Some("p")
        }),
        ("-public-ip=198.18.0.9", |f| {
            f.public_ip == Some([198, 18, 0, 9].into())
        }),
        ("--subnet-file=/x/subnet.env", |f| {
            f.subnet_file == std::path::Path::new("/x/subnet.env")
                && f.flannel_subnet_file.is_none()
        }),
        ("-healthz-port=9465", |f| {
            f.metrics_addr == Some("0.0.0.0:9465".parse().unwrap())
        }),
        ("-healthz-ip=127.0.0.1 -healthz-port 9465", |f| {
            f.metrics_addr == Some("127.0.0.1:9465".parse().unwrap())
        }),
        ("-healthz-port=0", |f| f.metrics_addr.is_none()),
        ("-healthz-port=9465 --metrics-addr=127.0.0.1:1", |f| {
            f.metrics_addr == Some("127.0.0.1:1".parse().unwrap())
        }),
        ("-port 8285", |f| f.expect_udp_port == Some(8285)),
        ("-subnet-lease-renew-margin=60 -iptables-resync=5", |_| true),
        (
            "-kube-subnet-mgr=false -auto-detect-ipv4 -auto-detect-ipv6=false",
            |_| true,
        ),
        (
            "-logtostderr -log_dir=/var/log/flannel -alsologtostderr=false",
            |_| true,
        ),
    ];
    for (line, check) in cases {
        assert!(check(&ok(line)), "{line}");
    }
}

#[test]
fn refused_before_anything_runs() {
    let cases: &[(&str, &str)] = &[
        (
            "-kube-subnet-mgr",
            "-kube-subnet-mgr=true: kolach keeps its leases in etcd only",
        ),
        ("-kube-subnet-mgr=true", "etcd only"),
        ("-public-ipv6=2001:db8::1", "IPv4 only"),
        ("-auto-detect-ipv6", "IPv4 only"),
        ("-iface=eth0 -iface=eth1", "-iface given 2 times"),
        ("-iface-regex=eth.*", "give -iface instead"),
        ("-iface-can-reach=8.8.8.8", "give -iface instead"),
        ("-port=x", "is not a UDP port"),
        ("-healthz-port=x", "is not a TCP port"),
        ("-healthz-ip=nope -healthz-port=1", "is not an IP address"),
        ("-remote=10.0.0.1:8080", "client/server"),
        ("-no-such-flag", "unknown flag -no-such-flag"),
        ("-ip-masq=maybe", "is not a boolean"),
    ];
    for (line, want) in cases {
        match parse(line, &[]) {
            Ok(_) => panic!("{line}: accepted"),
            Err(e) => assert!(e.contains(want), "{line}: {e}"),
        }
    }
    // Every refusal at once, one line each.
    let e = parse("-kube-subnet-mgr -public-ipv6=::1", &[]).unwrap_err();
    assert_eq!(e.lines().count(), 2, "{e}");
}

#[test]
fn what_has_no_effect_is_said() {
    let (_, notes) = parse(
        "-subnet-lease-renew-margin=30 -iptables-resync=5 -log_dir=/tmp -healthz-ip=127.0.0.1",
        &[],
    )
    .unwrap();
    let text: Vec<String> = notes
        .iter()
        .map(|n| match n {
            Note::Info(s) | Note::Warn(s) => s.clone(),
        })
        .collect();
    assert_eq!(text.len(), 4, "{text:?}");
    assert!(text[0].starts_with("-subnet-lease-renew-margin=30 has no effect"));
    assert!(text[1].starts_with("-iptables-resync=5 has no effect"));
    assert!(text[2].contains("kolach logs to stderr"));
    assert!(text[3].contains("without -healthz-port"));
}

#[test]
fn flanneld_environment() {
    let (f, notes) = parse(
        "",
        &[
            ("FLANNELD_ETCD_ENDPOINTS", "http://e:2379"),
            ("FLANNELD_IFACE", "eth0"),
            ("FLANNELD_IP_MASQ", "true"),
            ("FLANNELD_SUBNET_FILE", "/run/flannel/subnet.env"),
            ("FLANNELD_HEALTHZ_PORT", "9465"),
            ("FLANNELD_IPTABLES_FORWARD_RULES", "false"),
        ],
    )
    .unwrap();
    assert_eq!(f.etcd_endpoints, ["http://e:2379"]);
    assert_eq!(f.iface.as_deref(), Some("eth0"));
    assert!(f.ip_masq);
    assert!(!f.iptables_forward_rules);
    assert_eq!(
        f.flannel_subnet_file,
        Some(PathBuf::from("/run/flannel/subnet.env"))
    );
    assert_eq!(
        f.metrics_addr,
        Some("0.0.0.0:9465".parse::<SocketAddr>().unwrap())
    );
    assert!(notes.contains(&Note::Info("using FLANNELD_IFACE for --iface".into())));
    assert!(notes.iter().any(
        |n| matches!(n, Note::Info(s) if s.starts_with("FLANNELD_HEALTHZ_PORT=9465: /healthz"))
    ));

    // The command line wins over FLANNELD_, and so does KOLACH_.
    let (f, notes) = parse(
        "-iface=eth1",
        &[
            ("FLANNELD_IFACE", "eth0"),
            ("FLANNELD_METRICS_ADDR", "127.0.0.1:1"),
            ("KOLACH_METRICS_ADDR", "127.0.0.1:2"),
        ],
    )
    .unwrap();
    assert_eq!(f.iface.as_deref(), Some("eth1"));
    assert!(notes.contains(&Note::Info(
        "ignoring FLANNELD_IFACE: --iface is on the command line".into()
    )));
    assert!(notes.contains(&Note::Info(
        "ignoring FLANNELD_METRICS_ADDR: KOLACH_METRICS_ADDR is set too, and wins".into()
    )));
    assert!(parse("", &[("FLANNELD_KUBE_SUBNET_MGR", "true")])
        .unwrap_err()
        .starts_with("FLANNELD_KUBE_SUBNET_MGR=true: kolach keeps"));
}

#[test]
fn port_against_the_config() {
    assert_eq!(port_mismatch(8285, BackendKind::Udp, 8285), None);
    assert_eq!(
        port_mismatch(7890, BackendKind::Udp, 8285).unwrap(),
        "-port=7890 differs from the network config's Backend.Port 8285: kolach uses 8285, as every host does; set Backend.Port in etcd or drop -port"
    );
    assert!(port_mismatch(8285, BackendKind::Vxlan, 8472)
        .unwrap()
        .contains("backend is vxlan"));
}
