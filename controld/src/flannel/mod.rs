//! flannel's command line and environment (issue 18: "a drop-in for flannel
//! hosts"). kolach_proto::goflags turns Go-style flags and `FLANNELD_`
//! variables into kolach's; this module holds what only controld knows:
//! flannel's names that differ from ours ([`SPEC`]) and what becomes of each
//! ([`command_line`]): a flag of ours, a log line saying it has no effect and
//! what to do instead, or an error before anything is touched when its
//! meaning cannot be met.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};

use clap::CommandFactory;
use kolach_proto::goflags::{self, Foreign, ForeignFlag, Note, Source, Spec};

use crate::flags::Flags;
use crate::model::config::BackendKind;

/// flannel's (and the seeds') names that are not kolach's own.
pub const SPEC: Spec = Spec {
    foreign: &[
        // The seeds' spelling.
        ("etcd-endpoint", Foreign::Rename("etcd-endpoints")),
        // flannel's file, in flannel's format; ours is --subnet-file.
        ("subnet-file", Foreign::Rename("flannel-subnet-file")),
        ("port", Foreign::Value),
        ("healthz-ip", Foreign::Value),
        ("healthz-port", Foreign::Value),
        ("subnet-lease-renew-margin", Foreign::Value),
        ("iptables-resync", Foreign::Value),
        ("kube-subnet-mgr", Foreign::Bool),
        ("kube-api-url", Foreign::Value),
        ("kubeconfig-file", Foreign::Value),
        ("kube-annotation-prefix", Foreign::Value),
        ("net-config-path", Foreign::Value),
        ("public-ipv6", Foreign::Value),
        ("auto-detect-ipv4", Foreign::Bool),
        ("auto-detect-ipv6", Foreign::Bool),
        ("iface-regex", Foreign::Value),
        ("iface-can-reach", Foreign::Value),
        ("log_dir", Foreign::Value),
        ("log_file", Foreign::Value),
        ("logtostderr", Foreign::Bool),
        ("alsologtostderr", Foreign::Bool),
        ("stderrthreshold", Foreign::Value),
        ("vmodule", Foreign::Value),
        // flannel 0.5's client/server and multi-network modes.
        ("listen", Foreign::Value),
        ("remote", Foreign::Value),
        ("networks", Foreign::Value),
        ("subnet-dir", Foreign::Value),
    ],
    env_prefix: Some("FLANNELD"),
};

/// The command line for clap and the lines to log once logging is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    pub args: Vec<OsString>,
    pub notes: Vec<Note>,
}

/// Every flag whose meaning kolach cannot meet, one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct Refused(pub Vec<String>);

/// Translates the process's arguments (program name first) and environment.
pub fn command_line(
    args: impl IntoIterator<Item = OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CommandLine, Refused> {
    let cmd = Flags::command();
    let t = goflags::translate(&cmd, &SPEC, args, env).map_err(|e| Refused(vec![e.to_string()]))?;
    let mut refused = Vec::new();
    let mut notes = t.notes.clone();
    let mut args = t.args.clone();
    if let Some(n) = t.given.get("iface").filter(|n| **n > 1) {
        refused.push(format!(
            "-iface given {n} times: flannel tries each in turn, kolach uses one interface; give one -iface (a name or an address) and -public-ip if peers reach this host elsewhere"
        ));
    }
    let mut healthz_ip: Option<&ForeignFlag> = None;
    let mut healthz_port: Option<&ForeignFlag> = None;
    for f in &t.foreign {
        let flag = shown(f);
        let v = f.value.as_str();
        match f.name {
            "healthz-ip" => healthz_ip = Some(f),
            "healthz-port" => healthz_port = Some(f),
            "port" => match v.parse::<u16>() {
                Ok(p) if p > 0 => args.push(format!("--expect-udp-port={p}").into()),
                _ => refused.push(format!("{flag}: {v:?} is not a UDP port")),
            },
            "subnet-lease-renew-margin" => match v.parse::<u32>() {
                Ok(_) => notes.push(Note::Warn(format!(
                    "{flag} has no effect: kolach keeps its lease alive by etcd keepalive every third of the TTL (at most every 60 s), long before any margin; --subnet-lease-ttl sets the TTL"
                ))),
                Err(_) => refused.push(format!("{flag}: {v:?} is not a number of minutes")),
            },
            "iptables-resync" => notes.push(Note::Warn(format!(
                "{flag} has no effect: kolach-dataplaned keeps its masquerade and forward rules itself"
            ))),
            "kube-subnet-mgr" if v == "true" => refused.push(format!(
                "{flag}: kolach keeps its leases in etcd only, not in the Kubernetes API; drop -kube-subnet-mgr and give -etcd-endpoints"
            )),
            "kube-api-url" | "kubeconfig-file" | "kube-annotation-prefix" | "net-config-path" => {
                notes.push(Note::Warn(format!(
                    "{flag} has no effect: it belongs to -kube-subnet-mgr, which kolach does not have; the network config is read from etcd (<etcd-prefix>/config)"
                )))
            }
            "public-ipv6" => refused.push(format!(
                "{flag}: kolach's overlay is IPv4 only; drop -public-ipv6"
            )),
            "auto-detect-ipv6" if v == "true" => refused.push(format!(
                "{flag}: kolach's overlay is IPv4 only; drop -auto-detect-ipv6"
            )),
            "auto-detect-ipv4" if v == "false" => refused.push(format!(
                "{flag}: kolach's overlay is IPv4 only and needs an IPv4 address; drop -auto-detect-ipv4=false"
            )),
            "iface-regex" | "iface-can-reach" => refused.push(format!(
                "{flag}: kolach picks its interface by -iface NAME (or one of its addresses) or the default route; give -iface instead"
            )),
            "log_dir" | "log_file" | "logtostderr" | "alsologtostderr" | "stderrthreshold" | "vmodule" => {
                notes.push(Note::Info(format!(
                    "{flag}: kolach logs to stderr (the journal under systemd), filtered by -v or RUST_LOG"
                )))
            }
            "listen" | "remote" | "networks" => refused.push(format!(
                "{flag}: flannel's client/server and multi-network modes are not in kolach; every host talks to etcd itself"
            )),
            "subnet-dir" => notes.push(Note::Warn(format!(
                "{flag} has no effect: it belongs to flannel's multi-network mode"
            ))),
            // Go booleans at their harmless value: kube-subnet-mgr=false,
            // auto-detect-ipv4=true, auto-detect-ipv6=false.
            _ => {}
        }
    }
    match healthz(healthz_ip, healthz_port) {
        Ok(None) => {
            if let Some(ip) = healthz_ip {
                notes.push(Note::Warn(format!(
                    "{} has no effect without -healthz-port (0, flannel's default, is off); /healthz is served at --metrics-addr",
                    shown(ip)
                )));
            }
        }
        Ok(Some(addr)) => {
            let port = healthz_port.map(shown).unwrap_or_default();
            if t.sets(&cmd, "metrics-addr", env) {
                notes.push(Note::Warn(format!(
                    "ignoring {port}: --metrics-addr is set and wins"
                )));
            } else {
                args.push(format!("--metrics-addr={addr}").into());
                notes.push(Note::Info(format!(
                    "{port}: /healthz (and /metrics) at {addr}, as --metrics-addr={addr}"
                )));
            }
        }
        Err(e) => refused.push(e),
    }
    if refused.is_empty() {
        Ok(CommandLine { args, notes })
    } else {
        Err(Refused(refused))
    }
}

/// flannel's health endpoint as our metrics address: -healthz-ip (default
/// 0.0.0.0) and -healthz-port (default 0, off).
fn healthz(
    ip: Option<&ForeignFlag>,
    port: Option<&ForeignFlag>,
) -> Result<Option<SocketAddr>, String> {
    let Some(port) = port else {
        return Ok(None);
    };
    let p: u16 = port
        .value
        .parse()
        .map_err(|_| format!("{}: {:?} is not a TCP port", shown(port), port.value))?;
    if p == 0 {
        return Ok(None);
    }
    let ip: IpAddr = match ip {
        Some(f) => f
            .value
            .parse()
            .map_err(|_| format!("{}: {:?} is not an IP address", shown(f), f.value))?,
        None => IpAddr::from([0, 0, 0, 0]),
    };
    Ok(Some(SocketAddr::new(ip, p)))
}

/// How a foreign flag reads in a log line: `-healthz-port=9465` or
/// `FLANNELD_HEALTHZ_PORT=9465`.
fn shown(f: &ForeignFlag) -> String {
    match &f.source {
        Source::CommandLine => format!("-{}={}", f.name, f.value),
        Source::Env(var) => format!("{var}={}", f.value),
    }
}

/// The line to log when a config is applied while a flannel `-port` was
/// given: the port is the config's Backend.Port, for every host alike.
pub fn port_mismatch(expected: u16, kind: BackendKind, port: u16) -> Option<String> {
    match kind {
        BackendKind::Udp if port == expected => None,
        BackendKind::Udp => Some(format!(
            "-port={expected} differs from the network config's Backend.Port {port}: kolach uses {port}, as every host does; set Backend.Port in etcd or drop -port"
        )),
        other => Some(format!(
            "-port={expected} has no effect: the network config's backend is {other}, not udp"
        )),
    }
}

#[cfg(test)]
mod tests;
