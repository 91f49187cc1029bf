use std::collections::HashMap;

use super::*;
use crate::error::INCOMPATIBLE_VERSION;

fn conf(s: &str) -> Result<NetConf, CniError> {
    parse(s.as_bytes())
}

fn msg(s: &str) -> (u32, String) {
    let e = conf(s).unwrap_err();
    (e.code, e.msg)
}

#[test]
fn minimal_and_defaults() {
    let c = conf(r#"{"cniVersion":"1.0.0","name":"kolach","type":"kolach"}"#).unwrap();
    assert_eq!(c.version, Version::V1_0_0);
    assert_eq!(c.name, "kolach");
    assert_eq!(c.run_dir, PathBuf::from("/run/kolach"));
    assert_eq!(c.pool, "");
    assert_eq!(c.mtu, None);
    assert!(c.valid_attachments.is_empty());
}

#[test]
fn options_and_tolerated_keys() {
    let c = conf(
        r#"{"cniVersion":"0.4.0","name":"k8s-pod-network","type":"kolach",
            "runDir":"/tmp/x","pool":"web-1","mtu":1400,
            "capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[]},
            "prevResult":{"ips":[]},"ipam":{},"args":{"cni":{}},"dns":{}}"#,
    )
    .unwrap();
    assert_eq!(c.run_dir, PathBuf::from("/tmp/x"));
    assert_eq!(c.pool, "web-1");
    assert_eq!(c.mtu, Some(1400));
}

#[test]
fn decode_failures() {
    assert_eq!(msg("not json").0, DECODE_FAILURE);
    assert_eq!(
        msg("[1]"),
        (
            DECODE_FAILURE,
            "the network config on stdin is a JSON array, not an object".into()
        )
    );
    assert_eq!(msg("").0, DECODE_FAILURE);
}

#[test]
fn validation_messages() {
    let cases = [
        (r#"{"name":"k"}"#, "network config: cniVersion is missing"),
        (
            r#"{"cniVersion":1,"name":"k"}"#,
            "network config: cniVersion 1 is not a string",
        ),
        (r#"{"cniVersion":"1.0.0"}"#, "network config: name is missing"),
        (
            r#"{"cniVersion":"1.0.0","name":"-x"}"#,
            "network config: name \"-x\" is not a network name (a letter or digit, then letters, digits, '_', '.' or '-')",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"k","runDir":"run"}"#,
            "network config: runDir \"run\" is not an absolute path",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"k","pool":"Web"}"#,
            "network config: pool \"Web\" is not a pool name (^[a-z][a-z0-9_.-]*$)",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"k","mtu":40}"#,
            "network config: mtu 40 is not an integer in 68..=65535",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"k","mtu":"1400"}"#,
            "network config: mtu \"1400\" is not an integer in 68..=65535",
        ),
        (
            r#"{"cniVersion":"1.1.0","name":"k","cni.dev/valid-attachments":[{"containerID":"a"}]}"#,
            "network config: cni.dev/valid-attachments is not a list of {\"containerID\", \"ifname\"}",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(msg(input), (INVALID_CONFIG, want.to_string()), "{input}");
    }
}

#[test]
fn unsupported_version() {
    let (code, m) = msg(r#"{"cniVersion":"0.2.0","name":"k"}"#);
    assert_eq!(code, INCOMPATIBLE_VERSION);
    assert!(m.contains("\"0.2.0\""), "{m}");
    assert_eq!(
        peek_version(br#"{"cniVersion":"0.2.0"}"#).as_deref(),
        Some("0.2.0")
    );
    assert_eq!(peek_version(b"nope"), None);
}

#[test]
fn gc_attachments_under_both_names() {
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        let c = conf(&format!(
            r#"{{"cniVersion":"1.1.0","name":"k","{key}":[{{"containerID":"c1","ifname":"eth0"}}]}}"#
        ))
        .unwrap();
        assert_eq!(
            c.valid_attachments,
            vec![Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }]
        );
    }
}

fn getter(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

const ADD_ENV: [(&str, &str); 6] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c0ffee"),
    ("CNI_NETNS", "/run/netns/p"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/opt/cni/bin"),
    ("CNI_ARGS", "K8S_POD_NAMESPACE=web;K8S_POD_NAME=a"),
];

#[test]
fn env_for_add() {
    let get = getter(&ADD_ENV);
    assert_eq!(command(&get).unwrap(), Command::Add);
    let e = env(Command::Add, &get).unwrap();
    assert_eq!(e.container_id, "c0ffee");
    assert_eq!(e.netns, "/run/netns/p");
    assert_eq!(e.ifname, "eth0");
    assert_eq!(e.pod.namespace, "web");
}

#[test]
fn missing_variables_are_named() {
    let without = |k: &str| {
        let v: Vec<_> = ADD_ENV.iter().copied().filter(|(n, _)| *n != k).collect();
        getter(&v)
    };
    for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
        let e = env(Command::Add, &without(var)).unwrap_err();
        assert_eq!(e.code, INVALID_ENV);
        assert_eq!(
            e.msg,
            format!("required environment variable {var} is missing")
        );
    }
    // DEL does without a namespace.
    assert!(env(Command::Del, &without("CNI_NETNS")).is_ok());
    // GC and STATUS need none of them.
    assert!(env(Command::Gc, &getter(&[])).is_ok());
    let e = env(Command::Check, &getter(&[("CNI_PATH", "/x")])).unwrap_err();
    assert_eq!(
        e.msg,
        "required environment variables CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME are missing"
    );
    assert_eq!(
        command(&getter(&[])).unwrap_err().msg,
        "required environment variable CNI_COMMAND is missing"
    );
    let e = command(&getter(&[("CNI_COMMAND", "FROB")])).unwrap_err();
    assert_eq!(e.code, INVALID_ENV);
    assert!(e.msg.contains("\"FROB\""));
}

#[test]
fn malformed_ids() {
    let with = |k: &str, v: &str| {
        let mut vars: Vec<_> = ADD_ENV.iter().copied().filter(|(n, _)| *n != k).collect();
        vars.push((k, v));
        env(Command::Add, &getter(&vars))
    };
    for bad in ["a b", "-x", "a/b"] {
        let e = with("CNI_CONTAINERID", bad).unwrap_err();
        assert_eq!(e.code, INVALID_ENV);
        assert!(e.msg.starts_with("CNI_CONTAINERID"), "{}", e.msg);
    }
    for bad in ["a/b", "eth:0", "sixteen-chars-xx", "..", "e 0"] {
        let e = with("CNI_IFNAME", bad).unwrap_err();
        assert_eq!(e.code, INVALID_ENV);
        assert!(e.msg.starts_with("CNI_IFNAME"), "{}", e.msg);
    }
    assert!(with("CNI_IFNAME", "fifteen-chars-x").is_ok());
    let e = with("CNI_ARGS", "junk").unwrap_err();
    assert!(e.msg.starts_with("CNI_ARGS"));
}
