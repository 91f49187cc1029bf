use std::collections::HashMap;

use clap::{Arg, ArgAction, Command};

use super::*;

/// A command shaped like the daemons': values, a switch, a `<BOOL>`, a count.
fn cmd() -> Command {
    Command::new("d")
        .version("1")
        .arg(
            Arg::new("etcd_endpoints")
                .long("etcd-endpoints")
                .env("K_ETCD_ENDPOINTS"),
        )
        .arg(Arg::new("iface").long("iface").env("K_IFACE"))
        .arg(Arg::new("subnet_file").long("subnet-file"))
        .arg(Arg::new("flannel_subnet_file").long("flannel-subnet-file"))
        .arg(
            Arg::new("ip_masq")
                .long("ip-masq")
                .action(ArgAction::SetTrue),
        )
        .arg(
            Arg::new("fwd")
                .long("iptables-forward-rules")
                .action(ArgAction::Set)
                .value_parser(clap::value_parser!(bool)),
        )
        .arg(
            Arg::new("verbose")
                .short('v')
                .long("verbose")
                .action(ArgAction::Count),
        )
}

const SPEC: Spec = Spec {
    foreign: &[
        ("etcd-endpoint", Foreign::Rename("etcd-endpoints")),
        ("subnet-file", Foreign::Rename("flannel-subnet-file")),
        ("healthz-port", Foreign::Value),
        ("kube-subnet-mgr", Foreign::Bool),
    ],
    env_prefix: Some("FLANNELD"),
};

fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Translated, GoFlagError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let get = move |k: &str| env.get(k).cloned();
    translate(
        &cmd(),
        &SPEC,
        std::iter::once("d")
            .chain(args.iter().copied())
            .map(OsString::from),
        &get,
    )
}

fn args(args: &[&str]) -> Vec<String> {
    run(args, &[])
        .unwrap()
        .args
        .iter()
        .skip(1)
        .map(|a| a.to_str().unwrap().to_owned())
        .collect()
}

#[test]
fn go_forms_become_clap_forms() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["-etcd-endpoints=http://a,http://b"],
            &["--etcd-endpoints=http://a,http://b"],
        ),
        (
            &["-etcd-endpoints", "http://a"],
            &["--etcd-endpoints=http://a"],
        ),
        (&["-iface", "eth0"], &["--iface=eth0"]),
        (&["-iface", "-x"], &["--iface=-x"]),
        (&["-iface=eth0"], &["--iface=eth0"]),
        (&["-ip-masq"], &["--ip-masq"]),
        (&["-ip-masq=true"], &["--ip-masq"]),
        (&["-ip-masq=1"], &["--ip-masq"]),
        (&["-ip-masq=false"], &[]),
        (&["--ip-masq=False"], &[]),
        (
            &["-iptables-forward-rules"],
            &["--iptables-forward-rules=true"],
        ),
        (
            &["-iptables-forward-rules=f"],
            &["--iptables-forward-rules=false"],
        ),
        (
            &["-iptables-forward-rules", "false"],
            &["--iptables-forward-rules=false"],
        ),
        (&["-v=0"], &[]),
        (&["-v=1"], &["--verbose"]),
        (&["-v=4"], &["--verbose"]),
        (&["-v=5"], &["--verbose", "--verbose"]),
        (&["-v", "2"], &["--verbose"]),
        (&["-version"], &["--version"]),
        (&["-help"], &["--help"]),
        // One dash: flannel's file; two: ours.
        (
            &["-subnet-file=/run/flannel/subnet.env"],
            &["--flannel-subnet-file=/run/flannel/subnet.env"],
        ),
        (
            &["--subnet-file=/run/kolach/subnet.env"],
            &["--subnet-file=/run/kolach/subnet.env"],
        ),
        (
            &["-etcd-endpoint", "http://a"],
            &["--etcd-endpoints=http://a"],
        ),
        (
            &["--etcd-endpoint=http://a"],
            &["--etcd-endpoints=http://a"],
        ),
    ];
    for (input, want) in cases {
        assert_eq!(args(input), *want, "{input:?}");
    }
}

#[test]
fn clap_forms_stay() {
    for input in [
        &["--etcd-endpoints", "http://a", "--iface=eth0"][..],
        &["-vv"],
        &["-v"],
        &["-h"],
        &["-V"],
        &["--help"],
        &["--ip-masq"],
        &["--iptables-forward-rules", "false"],
        &["--iface", "-weird"],
        &["--", "-x"],
    ] {
        assert_eq!(args(input), input, "{input:?}");
    }
}

#[test]
fn foreign_flags_are_handed_back() {
    let t = run(&["-healthz-port", "9465", "-kube-subnet-mgr"], &[]).unwrap();
    assert_eq!(t.args.len(), 1);
    assert_eq!(
        t.foreign,
        vec![
            ForeignFlag {
                name: "healthz-port",
                value: "9465".into(),
                source: Source::CommandLine
            },
            ForeignFlag {
                name: "kube-subnet-mgr",
                value: "true".into(),
                source: Source::CommandLine
            },
        ]
    );
}

#[test]
fn errors() {
    assert_eq!(
        run(&["-nope=1"], &[]),
        Err(GoFlagError::Unknown("-nope=1".into()))
    );
    assert_eq!(
        run(&["-etcd-endpoints-x"], &[]),
        Err(GoFlagError::Unknown("-etcd-endpoints-x".into()))
    );
    assert!(matches!(
        run(&["-ip-masq=yes"], &[]),
        Err(GoFlagError::NotBool { .. })
    ));
    assert!(matches!(
        run(&["-v=high"], &[]),
        Err(GoFlagError::NotLevel { .. })
    ));
    assert!(matches!(
        run(&["-iface"], &[]),
        Err(GoFlagError::MissingValue(_))
    ));
    assert!(matches!(
        run(&["-healthz-port"], &[]),
        Err(GoFlagError::MissingValue(_))
    ));
}

#[test]
fn env_below_command_line_and_kolach() {
    let t = run(
        &["-iface=eth1"],
        &[
            ("FLANNELD_ETCD_ENDPOINTS", "http://e:2379"),
            ("FLANNELD_IFACE", "eth0"),
            ("FLANNELD_IP_MASQ", "true"),
            ("FLANNELD_SUBNET_FILE", "/run/flannel/subnet.env"),
            ("FLANNELD_HEALTHZ_PORT", "9465"),
            ("FLANNELD_V", "5"),
        ],
    )
    .unwrap();
    let a: Vec<_> = t.args.iter().skip(1).map(|a| a.to_str().unwrap()).collect();
    assert!(a.contains(&"--iface=eth1"));
    assert!(a.contains(&"--etcd-endpoints=http://e:2379"));
    assert!(a.contains(&"--ip-masq"));
    assert!(a.contains(&"--flannel-subnet-file=/run/flannel/subnet.env"));
    assert_eq!(a.iter().filter(|x| **x == "--verbose").count(), 2);
    assert!(!a.contains(&"--iface=eth0"));
    assert!(t.notes.contains(&Note::Info(
        "ignoring FLANNELD_IFACE: --iface is on the command line".into()
    )));
    assert!(t.notes.contains(&Note::Info(
        "using FLANNELD_ETCD_ENDPOINTS for --etcd-endpoints".into()
    )));
    assert_eq!(
        t.foreign[0].source,
        Source::Env("FLANNELD_HEALTHZ_PORT".into())
    );

    let t = run(
        &[],
        &[
            ("FLANNELD_ETCD_ENDPOINTS", "http://f:2379"),
            ("K_ETCD_ENDPOINTS", "http://k:2379"),
        ],
    )
    .unwrap();
    assert_eq!(t.args.len(), 1, "the KOLACH_ variable wins; clap reads it");
    assert!(t.notes.contains(&Note::Info(
        "ignoring FLANNELD_ETCD_ENDPOINTS: K_ETCD_ENDPOINTS is set too, and wins".into()
    )));
    assert!(
        t.sets(&cmd(), "etcd-endpoints", &|k| (k == "K_ETCD_ENDPOINTS")
            .then(|| "x".into()))
    );

    let t = run(&["-healthz-port=1"], &[("FLANNELD_HEALTHZ_PORT", "2")]).unwrap();
    assert_eq!(t.foreign.len(), 1);
    assert_eq!(t.foreign[0].value, "1");
}

#[test]
fn subcommands_and_globals() {
    let c = Command::new("ctl")
        .arg(
            Arg::new("json")
                .long("json")
                .global(true)
                .action(ArgAction::SetTrue),
        )
        .arg(Arg::new("run_dir").long("run-dir").global(true))
        .subcommand(
            Command::new("dataplane")
                .subcommand(Command::new("upgrade").arg(Arg::new("wait").long("wait"))),
        );
    let t = translate(
        &c,
        &Spec::default(),
        [
            "ctl",
            "-run-dir=/r",
            "dataplane",
            "upgrade",
            "-wait",
            "5",
            "-json",
        ]
        .map(OsString::from),
        &|_| None,
    )
    .unwrap();
    let a: Vec<_> = t.args.iter().map(|a| a.to_str().unwrap()).collect();
    assert_eq!(
        a,
        [
            "ctl",
            "--run-dir=/r",
            "dataplane",
            "upgrade",
            "--wait=5",
            "--json"
        ]
    );
    c.try_get_matches_from(t.args).unwrap();
}
