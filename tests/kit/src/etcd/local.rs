//! A one-member etcd on loopback for tests that run a daemon in-process
//! (controld's own tests): random free ports on 127.0.0.1, a data dir of its
//! own ([`TempDir`]), TLS with client certificates from a test CA
//! ([`tls::make_ca`]) when asked; killed and its dir removed on drop.
//! Stopping and starting it again keeps ports and data (an outage).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd;
use crate::etcd::tls::{self, TestCa};
use crate::etcd::which;
use crate::tempdir::TempDir;

/// How long one start may take before it counts as failed.
const START_WITHIN: Duration = Duration::from_secs(30);
/// Starts tried, each on fresh ports, before giving up.
const START_ATTEMPTS: usize = 5;

/// A one-member etcd on 127.0.0.1.
#[derive(Debug)]
pub struct LocalEtcd {
    child: Option<Child>,
    /// The client URL: `http://127.0.0.1:<port>`, https with TLS.
    pub url: String,
    peer: String,
    tls: Option<TestCa>,
    /// Removed after the process is killed (fields drop after `drop`).
    dir: TempDir,
}

/// A port nobody listens on right now (it may be taken before etcd binds
/// it; a start that fails is tried again on other ports).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalEtcd {
    /// Starts etcd and waits until it answers; with `tls`, it serves https
    /// only and demands client certificates of the test CA.
    pub fn start(tls: bool) -> Result<LocalEtcd> {
        let mut e = LocalEtcd {
            child: None,
            url: String::new(),
            peer: String::new(),
            tls: None,
            dir: TempDir::new("etcd"),
        };
        if tls {
            e.tls = Some(tls::make_ca(&e.dir.path().join("ca"))?);
        }
        e.pick_ports()?;
        e.spawn()?;
        Ok(e)
    }

    /// The test CA and certificates, with TLS.
    pub fn tls(&self) -> Option<&TestCa> {
        self.tls.as_ref()
    }

    /// Its own directory (data, CA).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn pick_ports(&mut self) -> Result<()> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.url = format!("{scheme}://127.0.0.1:{}", free_port()?);
        self.peer = format!("http://127.0.0.1:{}", free_port()?);
        Ok(())
    }

    fn spawn(&mut self) -> Result<()> {
        let bin = which("etcd").ok_or_else(|| anyhow!("etcd not found (`make deps`)"))?;
        let data = self.dir.path().join("data");
        for attempt in 0..START_ATTEMPTS {
            if attempt > 0 {
                // The ports were probably taken by a neighbour test meanwhile.
                self.pick_ports()?;
                let _ = std::fs::remove_dir_all(&data);
            }
            let mut c = Command::new(&bin);
            c.args([
                "--name=t".to_string(),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={}", self.url),
                format!("--advertise-client-urls={}", self.url),
                format!("--listen-peer-urls={}", self.peer),
                format!("--initial-advertise-peer-urls={}", self.peer),
                format!("--initial-cluster=t={}", self.peer),
                "--logger=zap".to_string(),
                "--log-level=error".to_string(),
            ]);
            if let Some(t) = &self.tls {
                c.arg(format!("--cert-file={}", t.server_cert.display()))
                    .arg(format!("--key-file={}", t.server_key.display()))
                    .arg(format!("--trusted-ca-file={}", t.ca.display()))
                    .arg("--client-cert-auth");
            }
            let mut child = c
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("start {}", bin.display()))?;
            let deadline = Instant::now() + START_WITHIN;
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if self.healthy() {
                    self.child = Some(child);
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        bail!("etcd did not come up at {}", self.url)
    }

    /// `etcdctl` flags that reach this etcd (endpoint, certificates).
    pub fn etcdctl_flags(&self) -> Vec<String> {
        let mut f = vec![format!("--endpoints={}", self.url)];
        if let Some(t) = &self.tls {
            f.push(format!("--cacert={}", t.ca.display()));
            f.push(format!("--cert={}", t.client_cert.display()));
            f.push(format!("--key={}", t.client_key.display()));
        }
        f
    }

    /// Whether `etcdctl endpoint health` says it serves.
    pub fn healthy(&self) -> bool {
        let mut args = vec!["ETCDCTL_API=3".to_string(), "etcdctl".to_string()];
        args.extend(self.etcdctl_flags());
        args.extend(
            [
                "--dial-timeout=1s",
                "--command-timeout=2s",
                "endpoint",
                "health",
            ]
            .map(String::from),
        );
        cmd::run("env", &args, Duration::from_secs(5)).is_ok_and(|o| o.success())
    }

    /// Kills etcd (data kept), as an outage.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.stop();
    }
}
