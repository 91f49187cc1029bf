//! Pod addresses under faults (issue 15), each scenario printing what it
//! measured: controld SIGKILLed in the middle of 50 ADDs and pods gone
//! without DEL ([`crash`]); a pool run out of blocks, ADDs failing after
//! Allocate and etcd stopped during ADDs ([`exhaustion`]); a host cut off past
//! its TTL while a joiner takes its block ([`partition`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use kolach_testkit::cni::Answer;
use kolach_testkit::{netns, Lab};
use serde_json::Value;

mod crash;
mod exhaustion;
mod partition;

/// Creates the namespaces of pods `tags` on host `n` (the lab removes them).
fn pod_namespaces(lab: &mut Lab, n: u8, tags: &[String]) -> Result<()> {
    for t in tags {
        let ns = lab.cni_pod_ns(n, t);
        netns::create(&ns)?;
        lab.adopt_namespace(ns);
    }
    Ok(())
}

/// ADD for every pod of `tags` on host `n`, `width` at a time; the answers
/// in the order of `tags`.
fn add_all(
    lab: &Lab,
    n: u8,
    tags: &[String],
    pool: Option<&str>,
    width: usize,
) -> Result<Vec<Answer>> {
    let next = AtomicUsize::new(0);
    let mut got: Vec<(usize, Result<Answer>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..width.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(t) = tags.get(i) else { break mine };
                        mine.push((i, lab.cni_add_answer(n, t, pool)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("no panic"))
            .collect()
    });
    got.sort_by_key(|(i, _)| *i);
    got.into_iter().map(|(_, a)| a).collect()
}

/// One allocation of `kolachctl addresses --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    container_id: String,
    address: Ipv4Addr,
    pool: String,
}

fn addresses(lab: &Lab, n: u8) -> Result<Vec<Held>> {
    let (ok, v) = lab.kolachctl_json(n, &["addresses"])?;
    ensure!(ok, "kolachctl addresses failed: {v}");
    v.as_array()
        .context("addresses: not a list")?
        .iter()
        .map(|a| {
            Ok(Held {
                container_id: a["container_id"].as_str().unwrap_or_default().into(),
                address: a["address"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| anyhow!("no address in {a}"))?,
                pool: a["pool"].as_str().unwrap_or_default().into(),
            })
        })
        .collect()
}

/// By container ID; fails when one address is held twice.
fn addresses_by_container(lab: &Lab, n: u8) -> Result<BTreeMap<String, Ipv4Addr>> {
    let all = addresses(lab, n)?;
    let mut seen = BTreeMap::new();
    for h in &all {
        if let Some(other) = seen.insert(h.address, &h.container_id) {
            return Err(anyhow!(
                "{} held by {other} and {}",
                h.address,
                h.container_id
            ));
        }
    }
    Ok(all
        .into_iter()
        .map(|h| (h.container_id, h.address))
        .collect())
}

/// `kolachctl blocks --json` rows of `pool` that host `n` holds.
fn own_blocks(lab: &Lab, n: u8, pool: &str) -> Result<Vec<Value>> {
    let (ok, v) = lab.kolachctl_json(n, &["blocks"])?;
    ensure!(ok, "kolachctl blocks failed: {v}");
    Ok(v.as_array()
        .context("blocks: not a list")?
        .iter()
        .filter(|b| b["pool"] == pool && b["is_self"] == true)
        .cloned()
        .collect())
}

/// The `ipam` part of `kolachctl status --json` on host `n`.
fn ipam_status(lab: &Lab, n: u8) -> Result<Value> {
    let (_, v) = lab.kolachctl_json(n, &["status"])?;
    Ok(v["ipam"].clone())
}

/// Waits until host `n`'s IPAM status satisfies `cond`; returns how long it took.
fn wait_ipam(
    lab: &Lab,
    n: u8,
    within: Duration,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Result<Duration> {
    let t = Instant::now();
    loop {
        let st = ipam_status(lab, n);
        if st.as_ref().is_ok_and(&cond) {
            return Ok(t.elapsed());
        }
        ensure!(
            t.elapsed() < within,
            "host{n}: ipam status not {what} within {within:?}: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many times host `n`'s controld log holds `what`.
fn log_count(lab: &Lab, n: u8, what: &str) -> usize {
    std::fs::read_to_string(&lab.host(n).controld.log).map_or(0, |l| l.matches(what).count())
}

/// Whether host `n`'s controld logs `what` within 3 s (it may come at the
/// IPAM task's next tick).
fn log_has(lab: &Lab, n: u8, what: &str) -> bool {
    let t = Instant::now();
    loop {
        if log_count(lab, n, what) > 0 {
            return true;
        }
        if t.elapsed() > Duration::from_secs(3) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Counts of CNI error codes, for the reports.
fn codes(answers: &[&Answer]) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for a in answers {
        *m.entry(a.code().unwrap_or(0)).or_default() += 1;
    }
    m
}
