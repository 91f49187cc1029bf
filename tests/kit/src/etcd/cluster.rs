//! A 3-member etcd cluster in the underlay namespace (198.18.0.251-253, one
//! address per member on the bridge), for the fault tests: find the leader,
//! kill it, bring it back. And `etcdctl` against any set of endpoints, with
//! the value or a whole transaction on stdin.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd;
use crate::etcd::{parse_get_json, which, CLIENT_PORT};
use crate::netns;
use crate::process::Proc;

/// Client/peer address of member `i` (1-based).
pub fn member_ip(i: usize) -> String {
    format!("198.18.0.{}", 250 + i)
}

pub fn member_url(i: usize) -> String {
    format!("http://{}:{CLIENT_PORT}", member_ip(i))
}

/// `etcdctl` (API v3) inside a namespace against a list of endpoints.
#[derive(Clone, Debug)]
pub struct Ctl {
    pub ns: String,
    pub endpoints: Vec<String>,
    /// Extra global flags (TLS files).
    pub flags: Vec<String>,
}

impl Ctl {
    pub fn new(ns: &str, endpoints: Vec<String>) -> Ctl {
        Ctl {
            ns: ns.to_string(),
            endpoints,
            flags: Vec::new(),
        }
    }

    /// Runs `etcdctl <args>` with `stdin`; must succeed within 10 s.
    pub fn run_input(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<String> {
        let endpoints = format!("--endpoints={}", self.endpoints.join(","));
        let mut full: Vec<&str> = vec![
            "netns",
            "exec",
            &self.ns,
            "env",
            "ETCDCTL_API=3",
            "etcdctl",
            &endpoints,
            "--dial-timeout=2s",
            "--command-timeout=8s",
        ];
        full.extend(self.flags.iter().map(String::as_str));
        full.extend_from_slice(args);
        let out = cmd::run_input("ip", &full, stdin, Duration::from_secs(12))?;
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

    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.run_input(args, None)
    }

    pub fn put(&self, key: &str, value: &str) -> Result<()> {
        // The value on stdin: it may be large, or start with a dash.
        self.run_input(&["put", "--", key], Some(value.as_bytes()))
            .map(drop)
    }

    pub fn del(&self, key: &str) -> Result<()> {
        self.run(&["del", "--", key]).map(drop)
    }

    /// One transaction of puts and deletes (no compares), so the whole batch
    /// is one revision.
    pub fn txn(&self, ops: &[TxnOp]) -> Result<()> {
        let mut text = String::from("\n");
        for op in ops {
            match op {
                TxnOp::Put(k, v) => text.push_str(&format!("put {} {}\n", quote(k), quote(v))),
                TxnOp::Del(k) => text.push_str(&format!("del {}\n", quote(k))),
            }
        }
        text.push_str("\n\n");
        let out = self.run_input(&["txn"], Some(text.as_bytes()))?;
        if !out.starts_with("SUCCESS") {
            bail!("etcdctl txn did not succeed: {out}");
        }
        Ok(())
    }

    /// The revision etcd is at now.
    pub fn revision(&self) -> Result<i64> {
        let out = self.run(&["get", "-w", "json", "--", "kolach-revision-probe"])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v["header"]["revision"]
            .as_i64()
            .ok_or_else(|| anyhow!("no revision in {out}"))
    }

    /// Compacts the history up to `revision`, waiting for it to be applied.
    pub fn compact(&self, revision: i64) -> Result<()> {
        self.run(&["compact", "--physical", &revision.to_string()])
            .map(drop)
    }

    /// Every key under `prefix` with its value and lease (decoded).
    pub fn get_prefix(&self, prefix: &str) -> Result<Vec<crate::etcd::Kv>> {
        let out = self.run(&["get", "--prefix", "-w", "json", "--", prefix])?;
        parse_get_json(&out, |v| Ok(String::from_utf8_lossy(&v).into_owned()))
    }
}

/// Standard base64 with padding (etcd's JSON gateway wants keys and values so).
pub fn base64_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Many puts, one revision each, fast: HTTP/1.1 to etcd's JSON gateway
/// (`/v3/kv/put`) on `addr` (e.g. 127.0.0.1:2379) from inside `ns`, one
/// connection per put. etcdctl would start a process per revision.
pub fn gateway_puts(ns: &str, addr: &str, kvs: &[(String, String)]) -> Result<()> {
    use std::io::{Read, Write};
    let addr = addr.to_string();
    netns::within(ns, || {
        for (k, v) in kvs {
            let body = format!(
                r#"{{"key":"{}","value":"{}"}}"#,
                base64_encode(k.as_bytes()),
                base64_encode(v.as_bytes())
            );
            let mut s = std::net::TcpStream::connect(&addr)
                .with_context(|| format!("connecting to etcd at {addr}"))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(
                s,
                "POST /v3/kv/put HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            let mut resp = String::new();
            s.read_to_string(&mut resp)?;
            if !resp.starts_with("HTTP/1.1 200") {
                bail!(
                    "etcd gateway put {k}: {}",
                    resp.lines().next().unwrap_or("")
                );
            }
        }
        Ok(())
    })
}

/// One operation of [`Ctl::txn`].
#[derive(Clone, Debug)]
pub enum TxnOp {
    Put(String, String),
    Del(String),
}

/// A double-quoted etcdctl txn argument (Go's strconv.Unquote rules).
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// The cluster: three etcd processes in the underlay namespace.
pub struct EtcdCluster {
    pub ns: String,
    pub members: Vec<Proc>,
    data: Vec<PathBuf>,
}

impl EtcdCluster {
    /// Adds the members' addresses to the underlay bridge and starts all three.
    pub fn start(ns: &str, stem: &str, log_dir: &Path) -> Result<EtcdCluster> {
        let bin = which("etcd").ok_or_else(|| anyhow!("etcd not found (`make deps`)"))?;
        let initial: Vec<String> = (1..=3)
            .map(|i| format!("m{i}=http://{}:2380", member_ip(i)))
            .collect();
        let mut members = Vec::new();
        let mut data = Vec::new();
        for i in 1..=3 {
            let ip = member_ip(i);
            netns::ip(ns, &["addr", "add", &format!("{ip}/24"), "dev", "br0"])?;
            let dir = data_dir(stem, i, log_dir);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            let args = vec![
                format!("--name=m{i}"),
                format!("--data-dir={}", dir.display()),
                format!("--listen-client-urls={}", member_url(i)),
                format!("--advertise-client-urls={}", member_url(i)),
                format!("--listen-peer-urls=http://{ip}:2380"),
                format!("--initial-advertise-peer-urls=http://{ip}:2380"),
                format!("--initial-cluster={}", initial.join(",")),
                "--initial-cluster-state=new".to_string(),
                "--initial-cluster-token=kolach-test".to_string(),
                "--logger=zap".to_string(),
                "--log-outputs=stderr".to_string(),
                "--log-level=warn".to_string(),
            ];
            let mut p = Proc::new(
                &format!("etcd-m{i}"),
                ns,
                &bin,
                args,
                log_dir.join(format!("etcd-m{i}.log")),
            );
            p.start()?;
            members.push(p);
            data.push(dir);
        }
        let mut c = EtcdCluster {
            ns: ns.to_string(),
            members,
            data,
        };
        c.wait_leader(Duration::from_secs(30))?;
        Ok(c)
    }

    /// All three client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        (1..=3).map(member_url).collect()
    }

    /// etcdctl against the members running now.
    pub fn ctl(&mut self) -> Ctl {
        let live: Vec<String> = (1..=3)
            .filter(|&i| self.members[i - 1].is_running())
            .map(member_url)
            .collect();
        Ctl::new(&self.ns, live)
    }

    /// The member (1-based) that every running member names as leader.
    pub fn leader(&mut self) -> Result<usize> {
        let mut ids = Vec::new();
        let mut leader_ids = Vec::new();
        for i in 1..=3 {
            if !self.members[i - 1].is_running() {
                ids.push(None);
                continue;
            }
            let ctl = Ctl::new(&self.ns, vec![member_url(i)]);
            let out = ctl.run(&["endpoint", "status", "-w", "json"])?;
            let v: serde_json::Value = serde_json::from_str(&out)?;
            let st = &v[0]["Status"];
            ids.push(st["header"]["member_id"].as_u64());
            leader_ids.push(st["leader"].as_u64().unwrap_or(0));
        }
        let first = *leader_ids.first().context("no member running")?;
        if first == 0 || leader_ids.iter().any(|l| *l != first) {
            bail!("members disagree on the leader: {leader_ids:?}");
        }
        ids.iter()
            .position(|id| *id == Some(first))
            .map(|p| p + 1)
            .ok_or_else(|| anyhow!("the leader {first:x} is not a running member"))
    }

    /// Waits until the running members agree on a leader; returns it.
    pub fn wait_leader(&mut self, within: Duration) -> Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            match self.leader() {
                Ok(l) => return Ok(l),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("no leader within {within:?}")))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i - 1].kill();
    }

    /// Starts member `i` again (same data dir) and waits until it is healthy.
    pub fn restart(&mut self, i: usize, within: Duration) -> Result<()> {
        self.members[i - 1].start()?;
        let ctl = Ctl::new(&self.ns, vec![member_url(i)]);
        let deadline = Instant::now() + within;
        loop {
            match ctl.run(&["endpoint", "health"]) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("m{i} not healthy within {within:?}")))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn log_tails(&self, lines: usize) -> String {
        self.members
            .iter()
            .map(|p| format!("----- {} -----\n{}\n", p.label, p.log_tail(lines)))
            .collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for p in &mut self.members {
            p.kill();
        }
        for d in &self.data {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn data_dir(stem: &str, i: usize, fallback: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join(format!("{stem}-etcd-m{i}"))
    } else {
        fallback.join(format!("etcd-m{i}-data"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::base64_decode;

    #[test]
    fn base64_roundtrip() {
        for s in [
            "",
            "f",
            "fo",
            "foo",
            "/coreos.com/network/config",
            "\u{0}\u{ff}",
        ] {
            let e = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&e).unwrap(), s.as_bytes(), "{e}");
        }
        assert_eq!(base64_encode(b"fo"), "Zm8=");
    }

    #[test]
    fn txn_arguments_are_quoted() {
        assert_eq!(
            quote(r#"{"PublicIP":"1.2.3.4"}"#),
            r#""{\"PublicIP\":\"1.2.3.4\"}""#
        );
        assert_eq!(quote(r"a\b"), r#""a\\b""#);
        assert_eq!(member_url(2), "http://198.18.0.252:2379");
    }
}
