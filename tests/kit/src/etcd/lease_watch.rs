//! Watching for the one thing a partition must never produce: two live
//! leases for one subnet. A background thread samples etcd's keys, then every
//! controld's status, over and over, and records each moment where
//!
//! - two hosts' statuses claim the same subnet, or
//! - a host claims a subnet whose key etcd (read just before) gives to
//!   another PublicIP.
//!
//! etcd is read first, so a host that reports a subnet after etcd already
//! gave it away really did claim it too late.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ipnet::Ipv4Net;

use crate::etcd::Etcdctl;
use crate::query;

/// One host as the watcher sees it.
#[derive(Clone, Debug)]
pub struct Watched {
    pub n: u8,
    pub public_ip: Ipv4Addr,
    pub controld_socket: PathBuf,
}

/// What the watcher saw.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub samples: u64,
    pub violations: Vec<String>,
    /// Per host, the subnets it claimed over time, with when (since start).
    pub claims: BTreeMap<u8, Vec<(Duration, Option<Ipv4Net>)>>,
}

impl Report {
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} samples, {} violations",
            self.samples,
            self.violations.len()
        );
        for (n, claims) in &self.claims {
            let line: Vec<String> = claims
                .iter()
                .map(|(t, c)| {
                    format!(
                        "{:.1}s {}",
                        t.as_secs_f64(),
                        c.map_or("-".to_string(), |c| c.to_string())
                    )
                })
                .collect();
            s.push_str(&format!("\n  host{n}: {}", line.join(" -> ")));
        }
        for v in self.violations.iter().take(10) {
            s.push_str(&format!("\n  VIOLATION {v}"));
        }
        s
    }
}

pub struct LeaseWatch {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Report>>,
}

/// Reads `<prefix>/subnets/` as subnet → PublicIP.
fn etcd_holders(ctl: &Etcdctl, prefix: &str) -> Result<BTreeMap<Ipv4Net, Ipv4Addr>> {
    let mut m = BTreeMap::new();
    for kv in ctl.get_prefix(prefix)? {
        let name = kv.key.strip_prefix(prefix).unwrap_or(&kv.key);
        let Some((a, l)) = name.rsplit_once('-') else {
            continue;
        };
        let (Ok(a), Ok(l)) = (a.parse::<Ipv4Addr>(), l.parse::<u8>()) else {
            continue;
        };
        let Ok(net) = Ipv4Net::new(a, l) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&kv.value).unwrap_or_default();
        if let Some(ip) = v["PublicIP"].as_str().and_then(|s| s.parse().ok()) {
            m.insert(net, ip);
        }
    }
    Ok(m)
}

fn claimed(sock: &std::path::Path) -> Result<Option<Ipv4Net>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let st = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), query::control_status(sock))
            .await
            .map_err(|_| anyhow!("status timed out"))?
    })?;
    Ok(query::control_subnet(&st))
}

impl LeaseWatch {
    /// Starts sampling `hosts` and etcd (`ctl`, keys under `prefix`).
    pub fn start(ctl: Etcdctl, prefix: String, hosts: Vec<Watched>) -> LeaseWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let mut r = Report::default();
            while !flag.load(Ordering::Relaxed) {
                let Ok(etcd) = etcd_holders(&ctl, &prefix) else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let mut by_subnet: BTreeMap<Ipv4Net, Vec<u8>> = BTreeMap::new();
                for h in &hosts {
                    // A host that is down or restarting claims nothing.
                    let c = claimed(&h.controld_socket).ok().flatten();
                    let hist = r.claims.entry(h.n).or_default();
                    if hist.last().map(|(_, last)| *last) != Some(c) {
                        hist.push((start.elapsed(), c));
                    }
                    let Some(subnet) = c else { continue };
                    by_subnet.entry(subnet).or_default().push(h.n);
                    if let Some(holder) = etcd.get(&subnet) {
                        if *holder != h.public_ip {
                            r.violations.push(format!(
                                "at {:.2?}: host{} ({}) claims {subnet}, which etcd gives to {holder}",
                                start.elapsed(),
                                h.n,
                                h.public_ip
                            ));
                        }
                    }
                }
                for (subnet, ns) in by_subnet {
                    if ns.len() > 1 {
                        r.violations.push(format!(
                            "at {:.2?}: hosts {ns:?} all claim {subnet}",
                            start.elapsed()
                        ));
                    }
                }
                r.samples += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r
        });
        LeaseWatch {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling and returns what was seen.
    pub fn finish(mut self) -> Result<Report> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("finished once")
            .join()
            .map_err(|_| anyhow!("lease watch thread panicked"))
    }
}

impl Drop for LeaseWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
