//! A real etcd (Debian's 3.4 `/usr/bin/etcd`) inside the underlay namespace,
//! and `etcdctl` (API v3) to read and write keys the way an operator would.
//!
//! Beside it: [`local`], a one-member etcd on loopback for tests that run a
//! daemon in-process; [`cluster`], a 3-member cluster (kill the leader, bring
//! it back) and `etcdctl` with stdin (big values, transactions); [`tls`], the
//! test CA for etcd over TLS; [`lease_watch`], sampling etcd and every
//! controld for two live leases of one subnet.

pub mod cluster;
pub mod lease_watch;
pub mod local;
pub mod tls;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::netns;
use crate::process::Proc;

/// etcd's client address on the underlay; hosts reach it there.
pub const ETCD_IP: &str = "198.18.0.254";
pub const CLIENT_PORT: u16 = 2379;

/// The endpoint URL the daemons are given.
pub fn endpoint() -> String {
    format!("http://{ETCD_IP}:{CLIENT_PORT}")
}

/// Finds a program on PATH (or a fixed fallback such as /usr/bin/etcd).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The etcd server of a lab.
#[derive(Debug)]
pub struct Etcd {
    pub proc: Proc,
    pub ns: String,
    pub data_dir: PathBuf,
}

impl Etcd {
    /// The etcd command: clients on the underlay address and loopback, peers
    /// on loopback only (a one-member cluster).
    pub fn new(ns: &str, data_dir: &Path, log: PathBuf) -> Result<Self> {
        let bin = which("etcd")
            .ok_or_else(|| anyhow!("etcd not found: install Debian's etcd-server (`make deps`)"))?;
        let d = data_dir.display().to_string();
        let args = vec![
            "--name=kolach-lab".to_string(),
            format!("--data-dir={d}"),
            format!("--listen-client-urls=http://{ETCD_IP}:{CLIENT_PORT},http://127.0.0.1:{CLIENT_PORT}"),
            format!("--advertise-client-urls={}", endpoint()),
            "--listen-peer-urls=http://127.0.0.1:2380".to_string(),
            "--initial-advertise-peer-urls=http://127.0.0.1:2380".to_string(),
            "--initial-cluster=kolach-lab=http://127.0.0.1:2380".to_string(),
            "--initial-cluster-state=new".to_string(),
            "--logger=zap".to_string(),
            "--log-outputs=stderr".to_string(),
            "--log-level=warn".to_string(),
        ];
        Ok(Etcd {
            proc: Proc::new("etcd", ns, &bin, args, log),
            ns: ns.to_string(),
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// Starts etcd and waits until `endpoint health` says it is healthy.
    pub fn start(&mut self, within: Duration) -> Result<()> {
        std::fs::create_dir_all(&self.data_dir)?;
        std::fs::set_permissions(&self.data_dir, std::fs::Permissions::from_mode(0o700))?;
        self.proc.start()?;
        let deadline = Instant::now() + within;
        let ctl = self.ctl();
        loop {
            if let Some(status) = self.proc.exited() {
                bail!(
                    "etcd exited ({status}) while starting:\n{}",
                    self.proc.log_tail(20)
                );
            }
            match ctl.run(&["endpoint", "health"]) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    bail!(
                        "etcd not healthy after {within:?}: {e:#}\n{}",
                        self.proc.log_tail(20)
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn ctl(&self) -> Etcdctl {
        Etcdctl {
            ns: self.ns.clone(),
        }
    }
}

/// `etcdctl` run inside the underlay namespace against etcd on loopback.
#[derive(Clone, Debug)]
pub struct Etcdctl {
    pub ns: String,
}

/// One key as `etcdctl get -w json` shows it, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub lease: i64,
    pub create_revision: i64,
    pub mod_revision: i64,
}

#[derive(Deserialize)]
struct GetJson {
    #[serde(default)]
    kvs: Vec<KvJson>,
}

#[derive(Deserialize)]
struct KvJson {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    lease: i64,
    #[serde(default)]
    create_revision: i64,
    #[serde(default)]
    mod_revision: i64,
}

/// `etcdctl get -w json` output as decoded keys, sorted by key; `value`
/// turns a value's bytes into text (strictly, or lossily for keys a test
/// filled with garbage).
pub fn parse_get_json(out: &str, value: impl Fn(Vec<u8>) -> Result<String>) -> Result<Vec<Kv>> {
    let parsed: GetJson =
        serde_json::from_str(out).with_context(|| format!("etcdctl json: {out}"))?;
    let mut kvs = parsed
        .kvs
        .into_iter()
        .map(|kv| {
            Ok(Kv {
                key: String::from_utf8(base64_decode(&kv.key)?)?,
                value: value(base64_decode(&kv.value)?)?,
                lease: kv.lease,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    kvs.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(kvs)
}

impl Etcdctl {
    /// Runs `etcdctl <args>`; must succeed within 5 s.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let mut full = vec![
            "ETCDCTL_API=3",
            "etcdctl",
            "--endpoints=http://127.0.0.1:2379",
            "--dial-timeout=2s",
            "--command-timeout=4s",
        ];
        full.extend_from_slice(args);
        let out = netns::exec(&self.ns, "env", &full, Duration::from_secs(8))?;
        if !out.success() {
            bail!(
                "etcdctl {} failed: {}{}",
                args.join(" "),
                out.stderr.trim(),
                out.stdout.trim()
            );
        }
        Ok(out.stdout)
    }

    pub fn put(&self, key: &str, value: &str) -> Result<()> {
        self.run(&["put", "--", key, value]).map(drop)
    }

    /// Puts `key` attached to etcd lease `lease` (hex id as `lease grant` prints it).
    pub fn put_with_lease(&self, key: &str, value: &str, lease: &str) -> Result<()> {
        let flag = format!("--lease={lease}");
        self.run(&["put", &flag, "--", key, value]).map(drop)
    }

    /// Every key under `prefix`, sorted by key.
    pub fn get_prefix(&self, prefix: &str) -> Result<Vec<Kv>> {
        let out = self.run(&["get", "--prefix", "-w", "json", "--", prefix])?;
        parse_get_json(&out, |v| Ok(String::from_utf8(v)?))
    }

    /// The value of one key, if present.
    pub fn get(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .get_prefix(key)?
            .into_iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value))
    }

    /// Deletes one key; returns how many keys were deleted.
    pub fn del(&self, key: &str) -> Result<u32> {
        let out = self.run(&["del", "--", key])?;
        Ok(out.trim().parse().unwrap_or(0))
    }

    /// Grants an etcd lease; returns its id in hex, as etcdctl takes it back.
    pub fn lease_grant(&self, ttl_secs: u64) -> Result<String> {
        let out = self.run(&["lease", "grant", &ttl_secs.to_string()])?;
        parse_lease_grant(&out).ok_or_else(|| anyhow!("unexpected `lease grant` output: {out}"))
    }

    pub fn lease_revoke(&self, id: &str) -> Result<()> {
        self.run(&["lease", "revoke", id]).map(drop)
    }
}

/// `lease 694d7a4b0c1e2f05 granted with TTL(60s)` → `694d7a4b0c1e2f05`.
pub fn parse_lease_grant(out: &str) -> Option<String> {
    let mut words = out.split_whitespace();
    (words.next()? == "lease").then_some(())?;
    let id = words.next()?;
    id.chars()
        .all(|c| c.is_ascii_hexdigit())
        .then(|| id.to_string())
}

/// Standard base64 (etcdctl's JSON encodes keys and values so).
pub fn base64_decode(s: &str) -> Result<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = val(c).ok_or_else(|| anyhow!("bad base64 character {:?}", c as char))?;
            acc |= v << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => bail!("bad base64 length in {s:?}"),
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(
            base64_decode("L2NvcmVvcy5jb20vbmV0d29yay9jb25maWc=").unwrap(),
            b"/coreos.com/network/config"
        );
        assert!(base64_decode("Z").is_err());
        assert!(base64_decode("Zm9*").is_err());
    }

    #[test]
    fn parses_lease_grant() {
        assert_eq!(
            parse_lease_grant("lease 694d7a4b0c1e2f05 granted with TTL(60s)\n").as_deref(),
            Some("694d7a4b0c1e2f05")
        );
        assert_eq!(parse_lease_grant("Error: nope"), None);
    }
}
