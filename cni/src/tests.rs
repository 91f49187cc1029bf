//! The dispatcher end to end, on paths that need neither controld nor the
//! kernel: VERSION, version and command checks, environment errors, and
//! controld being away.

use std::collections::HashMap;

use super::*;
use crate::error::{
    INCOMPATIBLE_VERSION, INVALID_CONFIG, INVALID_ENV, NOT_AVAILABLE, TRY_AGAIN_LATER,
};

fn invoke(vars: &[(&str, &str)], stdin: &str) -> (Outcome, serde_json::Value) {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let out = run(&|k| map.get(k).cloned(), stdin.as_bytes());
    let json = if out.stdout.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&out.stdout).expect("stdout is JSON")
    };
    (out, json)
}

fn absent_run_dir() -> String {
    std::env::temp_dir()
        .join(format!("kolach-cni-absent-{}", std::process::id()))
        .display()
        .to_string()
}

fn conf(version: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"kolach","type":"kolach","runDir":"{}"}}"#,
        absent_run_dir()
    )
}

fn env(command: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/proc/self/ns/net"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

#[test]
fn version_answers_whatever_else_is_wrong() {
    let (out, j) = invoke(
        &[("CNI_COMMAND", "VERSION"), ("CNI_NETNS", "dummy")],
        r#"{"cniVersion":"0.1.0"}"#,
    );
    assert!(out.success);
    assert_eq!(j["cniVersion"], "1.1.0");
    assert_eq!(
        j["supportedVersions"],
        serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    let (out, j) = invoke(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
    assert!(out.success);
    assert_eq!(j["cniVersion"], "0.4.0");
    let (out, _) = invoke(&[("CNI_COMMAND", "VERSION")], "");
    assert!(out.success);
}

#[test]
fn unsupported_version_is_code_1_in_the_latest_version() {
    let (out, j) = invoke(&env("ADD"), &conf("0.2.0"));
    assert!(!out.success);
    assert_eq!(j["code"], INCOMPATIBLE_VERSION);
    assert_eq!(j["cniVersion"], "1.1.0");
}

#[test]
fn commands_outside_their_version_are_code_1() {
    for (cmd, v) in [
        ("CHECK", "0.3.1"),
        ("CHECK", "0.3.0"),
        ("GC", "1.0.0"),
        ("STATUS", "0.4.0"),
    ] {
        let (out, j) = invoke(&env(cmd), &conf(v));
        assert!(!out.success, "{cmd} {v}");
        assert_eq!(j["code"], INCOMPATIBLE_VERSION, "{cmd} {v}");
        assert_eq!(j["cniVersion"], v, "errors speak the version asked");
    }
}

#[test]
fn environment_and_config_errors() {
    let (_, j) = invoke(&[("CNI_COMMAND", "ADD")], &conf("1.0.0"));
    assert_eq!(j["code"], INVALID_ENV);
    assert_eq!(
        j["msg"],
        "required environment variables CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH are missing"
    );
    let (_, j) = invoke(&[], &conf("1.0.0"));
    assert_eq!(j["code"], INVALID_ENV);
    let (_, j) = invoke(&env("ADD"), r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(j["code"], INVALID_CONFIG);
    assert_eq!(j["msg"], "network config: name is missing");
    let mut vars = env("ADD");
    vars[2] = ("CNI_NETNS", "/run/netns/kolach-cni-no-such-ns");
    let (_, j) = invoke(&vars, &conf("1.0.0"));
    assert_eq!(j["code"], INVALID_ENV);
    assert_eq!(
        j["msg"],
        "CNI_NETNS /run/netns/kolach-cni-no-such-ns does not exist"
    );
}

#[test]
fn controld_away() {
    let sentence = format!(
        "kolach-controld is not running (no socket at {}/controld.sock)",
        absent_run_dir()
    );
    let (out, j) = invoke(&env("ADD"), &conf("1.0.0"));
    assert!(!out.success);
    assert_eq!(j["code"], TRY_AGAIN_LATER);
    assert_eq!(j["msg"], sentence.as_str());
    let (_, j) = invoke(&env("CHECK"), &conf("0.4.0"));
    assert_eq!(j["code"], TRY_AGAIN_LATER);
    let (_, j) = invoke(&env("GC"), &conf("1.1.0"));
    assert_eq!(j["code"], TRY_AGAIN_LATER);
    let (_, j) = invoke(&env("STATUS"), &conf("1.1.0"));
    assert_eq!(j["code"], NOT_AVAILABLE);
    assert_eq!(j["msg"], sentence.as_str());
}
