//! dataplaned with a big route table: `k` phantom udp leases (flannel-style
//! values, on one etcd lease) written in transactions of 128 puts (etcd's
//! default `--max-txn-ops`), then how long until every dataplane holds them
//! all, and each dataplaned's peak RSS (VmHWM) before and after.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ipnet::Ipv4Net;
use serde::Serialize;

use crate::bench::procfs;
use crate::bench::signal;
use kolach_testkit::cmd;
use kolach_testkit::lab::{self, Lab};
use kolach_testkit::subnet_env::lease_key;

/// Puts per etcd transaction.
pub const TXN_OPS: usize = 128;
/// How long the dataplanes get to hold every route.
pub const APPLY_WITHIN: Duration = Duration::from_secs(180);

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostMemory {
    pub host: u8,
    pub vm_hwm_kb_before: u64,
    pub vm_hwm_kb: u64,
    pub vm_rss_kb: u64,
    /// When this host's dataplane held every route, from the first put.
    pub applied_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteLoad {
    pub phantom_leases: u32,
    /// Routes each dataplane holds then (the phantoms plus the other host).
    pub routes: u32,
    /// Writing all phantom leases into etcd.
    pub write_s: f64,
    /// From the first put until every dataplane held every route.
    pub applied_s: f64,
    /// From the last put until then.
    pub applied_after_last_write_s: f64,
    pub hosts: Vec<HostMemory>,
}

/// `k` (subnet, PublicIP) pairs from 10.16.0.0/24 up and 198.19.0.1 up,
/// skipping the subnets in `taken`.
pub fn phantoms(k: usize, taken: &[Ipv4Net]) -> Vec<(Ipv4Net, Ipv4Addr)> {
    let base = u32::from(Ipv4Addr::new(10, 16, 0, 0)) >> 8;
    let ip0 = u32::from(Ipv4Addr::new(198, 19, 0, 1));
    (0u32..)
        .map(|i| Ipv4Addr::from((base + i) << 8))
        .take_while(|a| a.octets()[0] == 10)
        .map(|a| Ipv4Net::new(a, 24).expect("/24 is valid"))
        .filter(|s| !taken.contains(s))
        .take(k)
        .enumerate()
        .map(|(i, s)| (s, Ipv4Addr::from(ip0 + i as u32)))
        .collect()
}

/// The `etcdctl txn` input putting `leases` under `prefix` on etcd lease
/// `lease`: no compares, the puts, no failure ops. Values are quoted the
/// way etcdctl's txn parser takes them.
pub fn txn_input(prefix: &str, leases: &[(Ipv4Net, Ipv4Addr)], lease: &str) -> String {
    let mut s = String::from("\n");
    for (subnet, ip) in leases {
        let value = format!(r#"{{"PublicIP":"{ip}","BackendType":"udp","BackendData":null}}"#);
        let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
        s.push_str(&format!(
            "put --lease={lease} {prefix}{} \"{quoted}\"\n",
            lease_key(*subnet)
        ));
    }
    s.push_str("\n\n");
    s
}

fn memory(lab: &Lab) -> Result<Vec<(u8, u32, u64)>> {
    let mut v = Vec::new();
    for h in &lab.hosts {
        if let Some(pid) = h.dataplaned.pid() {
            v.push((h.n, pid, procfs::process_rss_kb(pid)?.0));
        }
    }
    Ok(v)
}

/// Loads `k` phantom leases into `lab` (a running udp mesh) and measures.
pub fn load(lab: &Lab, k: u32) -> Result<RouteLoad> {
    let taken: Vec<Ipv4Net> = lab
        .hosts
        .iter()
        .filter_map(|h| h.subnet_env().map(|e| e.lease()))
        .collect();
    let leases = phantoms(k as usize, &taken);
    if leases.len() != k as usize {
        bail!("only {} free subnets for {k} phantom leases", leases.len());
    }
    let before = memory(lab)?;
    let ctl = lab.etcdctl();
    let lease = ctl.lease_grant(3600)?;
    let prefix = lab::subnets_prefix();
    let start = Instant::now();
    for chunk in leases.chunks(TXN_OPS) {
        signal::check()?;
        let input = txn_input(&prefix, chunk, &lease);
        let out = cmd::run_input(
            "ip",
            &[
                "netns",
                "exec",
                &ctl.ns,
                "env",
                "ETCDCTL_API=3",
                "etcdctl",
                "--endpoints=http://127.0.0.1:2379",
                "--command-timeout=10s",
                "txn",
            ],
            Some(input.as_bytes()),
            Duration::from_secs(15),
        )?;
        if !out.success() || !out.stdout.starts_with("SUCCESS") {
            bail!(
                "etcdctl txn failed ({}): {}{}",
                out.status,
                out.stdout.trim(),
                out.stderr.trim()
            );
        }
    }
    let written = start.elapsed();
    let want = k + u32::try_from(lab.hosts.len()).unwrap_or(1) - 1;
    let mut applied: Vec<Option<f64>> = vec![None; lab.hosts.len()];
    while applied.iter().any(Option::is_none) {
        signal::check()?;
        for (i, h) in lab.hosts.iter().enumerate() {
            if applied[i].is_none() {
                if let Ok(st) = lab.dp_status(h.n) {
                    if st.route_count == want {
                        applied[i] = Some(start.elapsed().as_secs_f64());
                    }
                }
            }
        }
        if start.elapsed() > APPLY_WITHIN && applied.iter().any(Option::is_none) {
            bail!("dataplanes do not hold {want} routes {APPLY_WITHIN:?} after the first put");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let applied_s = applied.iter().flatten().copied().fold(0.0, f64::max);
    // Let the last snapshot's buffers settle before reading memory.
    signal::sleep(Duration::from_millis(500));
    let mut hosts = Vec::new();
    for ((n, pid, hwm_before), applied) in before.into_iter().zip(applied) {
        let (hwm, rss) = procfs::process_rss_kb(pid)?;
        hosts.push(HostMemory {
            host: n,
            vm_hwm_kb_before: hwm_before,
            vm_hwm_kb: hwm,
            vm_rss_kb: rss,
            applied_s: applied.unwrap_or_default(),
        });
    }
    Ok(RouteLoad {
        phantom_leases: k,
        routes: want,
        write_s: written.as_secs_f64(),
        applied_s,
        applied_after_last_write_s: applied_s - written.as_secs_f64(),
        hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phantoms_skip_taken_subnets() {
        let taken: Vec<Ipv4Net> = vec!["10.16.1.0/24".parse().unwrap()];
        let p = phantoms(5000, &taken);
        assert_eq!(p.len(), 5000);
        assert_eq!(
            p[0],
            (
                "10.16.0.0/24".parse().unwrap(),
                Ipv4Addr::new(198, 19, 0, 1)
            )
        );
        assert_eq!(
            p[1],
            (
                "10.16.2.0/24".parse().unwrap(),
                Ipv4Addr::new(198, 19, 0, 2)
            )
        );
        assert!(!p.iter().any(|(s, _)| taken.contains(s)));
        let mut subnets: Vec<_> = p.iter().map(|x| x.0).collect();
        subnets.dedup();
        assert_eq!(subnets.len(), 5000);
        assert_eq!(p[4999].1, Ipv4Addr::new(198, 19, 19, 136));
        assert_eq!(phantoms(100_000, &[]).len(), 240 * 256);
    }

    #[test]
    fn txn_input_quotes_values_for_etcdctl() {
        let l = vec![(
            "10.16.0.0/24".parse().unwrap(),
            Ipv4Addr::new(198, 19, 0, 1),
        )];
        let s = txn_input("/coreos.com/network/subnets/", &l, "694d");
        assert_eq!(
            s,
            "\nput --lease=694d /coreos.com/network/subnets/10.16.0.0-24 \
             \"{\\\"PublicIP\\\":\\\"198.19.0.1\\\",\\\"BackendType\\\":\\\"udp\\\",\\\"BackendData\\\":null}\"\n\n\n"
        );
    }
}
