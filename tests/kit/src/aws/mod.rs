//! The AWS side of the aws-vpc tests (DESIGN §11), without AWS: the EC2
//! emulator moto, from the venv `make deps` makes, in the lab's underlay
//! namespace, with the pieces around it in `assets/aws/labaws.py`:
//!
//! ```text
//!  host n's controld ──EC2 Query API──▶ proxy 198.18.0.254:<base+1> ──▶ moto 127.0.0.1:<base>
//!        │                               counts Action= per host,           ▲
//!        │                               reports routes to gone ENIs        │ seed, checks,
//!        │                               as blackhole (moto cannot)         │ hand-made faults
//!        └──instance metadata──▶ stub 198.18.0.254:<base+2>            the test (direct)
//!                                 instance = the one whose private IP is the caller's address
//! ```
//!
//! The seed: a VPC 198.18.0.0/16 holding the lab's underlay, a subnet
//! 198.18.0.0/24, two route tables (the first associated with the subnet),
//! one instance per host whose private IP is the host's underlay address,
//! and spare instances for routes pointed elsewhere. Everything stops when
//! the [`Emulator`] is dropped; moto keeps its state in memory only.
//!
//! Here: where moto and the script are, what the seed made, the plumbing;
//! `emulator`: the three processes and what a test does with them.

mod emulator;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use crate::netns;
use crate::process::Proc;

pub use emulator::Emulator;

/// The region the stub answers and the seed uses.
pub const REGION: &str = "us-east-1";
/// The keys the hosts are given; moto takes any until auth is on.
pub const KEY_ID: &str = "AKIAKOLACHLAB0000000";
pub const SECRET: &str = "kolach-lab-secret";
/// The calls that change the VPC (what the aws-vpc backend may write).
pub const WRITE_ACTIONS: [&str; 4] = [
    "CreateRoute",
    "ReplaceRoute",
    "DeleteRoute",
    "ModifyNetworkInterfaceAttribute",
];
/// moto's port in the underlay (loopback there); the proxy and the stub
/// take the next two, on the underlay address.
pub const BASE_PORT: u16 = 4566;
/// Seconds between the backend's full checks in the lab
/// (`KOLACH_AWS_RESYNC`; 30 s by default): repairs of routes spoiled by
/// hand show within a few seconds.
pub const RESYNC_SECS: &str = "2";

/// The environment every lab host's controld starts with: the metadata
/// service and EC2 on a closed port of the host's own loopback, so a host
/// switched to aws-vpc never reaches for the real ones. [`Emulator::host_env`]
/// replaces them.
pub fn unreachable_env() -> Vec<(String, String)> {
    let closed = "http://127.0.0.1:9".to_string();
    vec![
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), closed.clone()),
        ("AWS_ENDPOINT_URL_EC2".into(), closed.clone()),
        ("AWS_ENDPOINT_URL".into(), closed),
    ]
}

/// The venv holding moto: `$KOLACH_MOTO_VENV`, else `cache/moto-venv` in
/// a target dir (`make deps` makes it there).
pub fn venv() -> Result<PathBuf> {
    crate::cache::find(
        "moto-venv",
        "KOLACH_MOTO_VENV",
        "run `make deps` to make the venv holding moto[server,ec2]",
        |d| d.join("bin/moto_server").is_file(),
    )
}

/// The helper script (proxy, metadata stub, seed, direct calls).
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/aws/labaws.py")
}

/// One seeded instance.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Instance {
    pub instance_id: String,
    /// Its primary network interface: where the routes to its host point.
    pub eni: String,
    #[serde(default)]
    pub mac: String,
}

/// What the seed made.
#[derive(Debug, Clone, Deserialize)]
pub struct Seed {
    pub vpc: String,
    pub subnet: String,
    /// Two tables; the first is associated with the subnet.
    pub tables: Vec<String>,
    /// By private IP (hosts and spares).
    pub instances: BTreeMap<Ipv4Addr, Instance>,
}

/// One route of a table, as DescribeRouteTables shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: String,
    pub eni: Option<String>,
    pub instance: Option<String>,
    /// "active" or "blackhole" (the latter only through the proxy).
    pub state: String,
}

/// How long a piece may take to listen.
const START_WITHIN: Duration = Duration::from_secs(30);

/// Waits until something accepts on `addr` inside `ns`; fails early when
/// `proc` exits.
fn wait_listening(ns: &str, addr: &str, proc: &mut Proc) -> Result<()> {
    let sa: SocketAddr = addr.parse()?;
    let deadline = Instant::now() + START_WITHIN;
    loop {
        if let Some(status) = proc.exited() {
            bail!(
                "{} exited ({status}) while starting:\n{}",
                proc.label,
                proc.log_tail(20)
            );
        }
        let up = netns::within(ns, || {
            Ok(TcpStream::connect_timeout(&sa, Duration::from_millis(200)).is_ok())
        })?;
        if up {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} not listening on {addr} after {START_WITHIN:?}:\n{}",
                proc.label,
                proc.log_tail(20)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP/1.0 GET; the body of a 200 answer.
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP answer from {addr}: {text:?}"))?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!(
            "GET {path} at {addr}: {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(body.to_string())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_never_reach_real_aws_by_default() {
        let env = unreachable_env();
        for key in ["AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_ENDPOINT_URL_EC2"] {
            let v = env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
            assert_eq!(v, Some("http://127.0.0.1:9"), "{key}");
        }
    }

    #[test]
    fn the_script_ships_with_the_kit() {
        assert!(script().is_file(), "{}", script().display());
    }
}
