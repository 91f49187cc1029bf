//! What the plugin's kernel tests share: a fake controld serving
//! `kolach.ipam.v1` from an in-memory map on a socket in a temp run dir, a
//! host namespace to run the plugin in (as a runtime would: `ip netns exec`,
//! a clean environment, the config on stdin) and pod namespaces.
//!
//! Namespaces are the test kit's [`Netns`] (`kdp-<tag>-<pid>`), removed on
//! drop, also when a test fails.

// Each test binary uses part of this module.
#![allow(dead_code, unused_imports)]

use std::time::Duration;

use kolach_testkit::cmd;
use kolach_testkit::netns::Netns;
use kolach_testkit::tempdir::TempDir;
use serde_json::Value;

mod fake;
pub use fake::{Controld, State, MTU, NETWORK, POOL};

/// One test's world: a run dir, a host namespace the plugin runs in.
pub struct World {
    pub run_dir: TempDir,
    pub host: Netns,
    tag: String,
}

/// What one plugin run printed.
#[derive(Debug)]
pub struct Reply {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub json: Value,
}

impl Reply {
    pub fn ok(&self) -> &Value {
        assert_eq!(
            self.code,
            Some(0),
            "plugin failed: {}\n{}",
            self.stdout,
            self.stderr
        );
        &self.json
    }

    /// The CNI error code and message, asserting exit status 1.
    pub fn err(&self) -> (u64, String) {
        assert_eq!(self.code, Some(1), "plugin succeeded: {}", self.stdout);
        (
            self.json["code"].as_u64().expect("code"),
            self.json["msg"].as_str().expect("msg").to_string(),
        )
    }
}

/// Environment of one call: container ID, ifname, netns path.
pub struct Call<'a> {
    pub command: &'a str,
    pub container: &'a str,
    pub ifname: &'a str,
    pub netns: &'a str,
    pub args: &'a str,
}

pub fn netns_path(ns: &Netns) -> String {
    format!("/run/netns/{}", ns.name)
}

impl World {
    pub fn new(tag: &str) -> World {
        World {
            run_dir: TempDir::new(&format!("cni-{tag}")),
            host: Netns::new(&format!("cni-{tag}-h")),
            tag: tag.to_string(),
        }
    }

    /// A pod namespace.
    pub fn pod(&self, n: u8) -> Netns {
        Netns::new(&format!("cni-{}-p{n}", self.tag))
    }

    pub fn controld(&self) -> Controld {
        Controld::start(self.run_dir.path())
    }

    /// `{"cniVersion": version, "name": "kolach", "type": "kolach", "runDir": …}` plus `extra` keys.
    pub fn conf(&self, version: &str, extra: &str) -> String {
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(",{extra}")
        };
        format!(
            r#"{{"cniVersion":"{version}","name":"{NETWORK}","type":"kolach","runDir":"{}"{extra}}}"#,
            self.run_dir.path().display()
        )
    }

    /// Runs the built plugin inside the host namespace, as a runtime would.
    pub fn run(&self, call: &Call<'_>, conf: &str) -> Reply {
        run_plugin(
            &self.host.name,
            env!("CARGO_BIN_EXE_kolach"),
            call,
            conf,
            "/opt/cni/bin",
        )
    }

    pub fn add(&self, container: &str, pod: &Netns, version: &str) -> Reply {
        let netns = netns_path(pod);
        self.run(
            &Call {
                command: "ADD",
                container,
                ifname: "eth0",
                netns: &netns,
                args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p",
            },
            &self.conf(version, ""),
        )
    }

    pub fn simple(&self, command: &str, container: &str, pod: &Netns, version: &str) -> Reply {
        let netns = netns_path(pod);
        self.run(
            &Call {
                command,
                container,
                ifname: "eth0",
                netns: &netns,
                args: "",
            },
            &self.conf(version, ""),
        )
    }
}

/// The test kit's runner ([`kolach_testkit::cni::exec`]): `ip netns exec
/// <ns> env -i CNI_…=… <program>` with `conf` on stdin.
pub fn run_plugin(ns: &str, program: &str, call: &Call<'_>, conf: &str, cni_path: &str) -> Reply {
    let unused = Value::Null;
    let kit_call = kolach_testkit::cni::Call {
        command: call.command,
        container_id: call.container,
        netns: call.netns,
        ifname: call.ifname,
        args: call.args,
        config: &unused,
    };
    let out = kolach_testkit::cni::exec(
        Some(ns),
        std::path::Path::new(program),
        cni_path,
        &kit_call,
        conf.as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
    .output;
    let json = if out.stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", out.stdout))
    };
    Reply {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
        json,
    }
}

/// `ip -j -n <ns> args…` parsed (an empty answer is an empty list).
pub fn ip_json(ns: &Netns, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["-j", "-n", ns.name.as_str()];
    full.extend_from_slice(args);
    let out = cmd::run_ok("ip", &full).unwrap_or_else(|e| panic!("{e:#}"));
    if out.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str(&out).expect("ip -j prints JSON") {
        Value::Array(v) => v,
        other => vec![other],
    }
}

/// Whether `ns` has link `name`.
pub fn has_link(ns: &Netns, name: &str) -> bool {
    ns.has_link(name)
}

/// A sysctl file's content as seen from inside `ns`.
pub fn proc_sys(ns: &Netns, path: &str) -> String {
    let out = ns.exec(&["cat", path]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The host end's name, by the plugin's own formula.
pub fn host_end(container: &str, ifname: &str) -> String {
    kolach_proto::pod::host_end(container, ifname)
}
