//! A controld paused (SIGSTOP) while 100 leases come, change many times and
//! half of them go, and etcd compacts its history past everything the paused
//! watch had seen: after SIGCONT its dataplane's routes match etcd within
//! 5 s, without a single deleted lease left behind.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ipnet::Ipv4Net;
use kolach_testkit::etcd::cluster::{gateway_puts, Ctl, TxnOp};
use kolach_testkit::query::RouteEntry;
use kolach_testkit::subnet_env::lease_key;
use kolach_testkit::{lab, run, Lab};

const LEASES: usize = 100;
/// Rounds of rewriting all of them, one revision per put: enough revisions
/// and bytes that the paused watch falls behind etcd's buffers (its 1024
/// responses per watcher, the client's 2 MiB HTTP/2 window), so the
/// compaction really cuts it off.
const ROUNDS: usize = 15;

fn value(ip: Ipv4Addr, round: usize) -> String {
    // Readers ignore unknown fields; the padding makes every event big.
    format!(
        r#"{{"PublicIP":"{ip}","BackendType":"udp","BackendData":null,"Round":{round},"Pad":"{}"}}"#,
        "p".repeat(8000)
    )
}

/// What host `n`'s dataplane should route: every key in etcd but its own.
fn expected(lab: &Lab, n: u8) -> Result<BTreeSet<RouteEntry>> {
    let prefix = lab::subnets_prefix();
    let mut want = BTreeSet::new();
    for kv in lab.etcdctl().get_prefix(&prefix)? {
        let name = kv.key.strip_prefix(&prefix).unwrap_or(&kv.key);
        let (a, l) = name.rsplit_once('-').context("key")?;
        let subnet = Ipv4Net::new(a.parse()?, l.parse()?)?;
        let v: serde_json::Value = serde_json::from_str(&kv.value)?;
        let ip: Ipv4Addr = v["PublicIP"].as_str().context("PublicIP")?.parse()?;
        if ip != lab.host(n).ip {
            want.insert((subnet, ip));
        }
    }
    Ok(want)
}

#[test]
fn a_paused_controld_catches_up_after_compaction() {
    run("compact", compaction);
}

fn compaction(lab: &mut Lab) -> Result<()> {
    lab.mesh(2)?;
    let taken: Vec<Ipv4Net> = [1, 2]
        .iter()
        .filter_map(|&n| lab.host(n).subnet_env().map(|e| e.lease()))
        .collect();
    let subnets: Vec<Ipv4Net> = (20u8..=250)
        .map(|c| Ipv4Net::new(Ipv4Addr::new(10, 50, c, 0), 24).expect("valid"))
        .filter(|s| !taken.contains(s))
        .take(LEASES)
        .collect();
    let key = |s: &Ipv4Net| format!("{}{}", lab::subnets_prefix(), lease_key(*s));
    let ip = |i: usize, round: usize| Ipv4Addr::new(198, 18, 1 + (round % 2) as u8, 10 + i as u8);
    let ctl = Ctl::new(&lab.names.underlay(), vec!["http://127.0.0.1:2379".into()]);

    let pid = lab.host(1).controld.pid().context("controld not running")?;
    let start_rev = ctl.revision()?;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    let paused = Instant::now();
    let puts: Vec<(String, String)> = (0..ROUNDS)
        .flat_map(|round| subnets.iter().enumerate().map(move |(i, s)| (i, s, round)))
        .map(|(i, s, round)| (key(s), value(ip(i, round), round)))
        .collect();
    gateway_puts(&lab.names.underlay(), "127.0.0.1:2379", &puts)?;
    // Half of them go; a few more change hands once more.
    let gone: Vec<Ipv4Net> = subnets.iter().step_by(2).copied().collect();
    let dels: Vec<TxnOp> = gone.iter().map(|s| TxnOp::Del(key(s))).collect();
    ctl.txn(&dels)?;
    let last: Vec<TxnOp> = subnets
        .iter()
        .enumerate()
        .skip(1)
        .step_by(4)
        .map(|(i, s)| TxnOp::Put(key(s), value(Ipv4Addr::new(198, 18, 2, 100 + i as u8), 99)))
        .collect();
    ctl.txn(&last)?;
    let rev = ctl.revision()?;
    ctl.compact(rev)?;
    eprintln!(
        "while host1's controld was stopped: {} events over revisions {start_rev}..={rev}, compacted at {rev} ({:?})",
        puts.len() + gone.len() + last.len(),
        paused.elapsed()
    );

    // The running host follows along as usual.
    let want2 = expected(lab, 2)?;
    lab.wait_routes(2, Duration::from_secs(10), "matched etcd", |r| {
        r.iter().copied().collect::<BTreeSet<_>>() == want2
    })?;

    let want1 = expected(lab, 1)?;
    ensure!(
        want1.len() == LEASES - gone.len() + 1,
        "{} expected",
        want1.len()
    );
    let t = Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
    let routes = lab.wait_routes(1, Duration::from_secs(5), "matched etcd", |r| {
        r.iter().copied().collect::<BTreeSet<_>>() == want1
    })?;
    eprintln!(
        "host1 after SIGCONT: {} routes matching etcd after {:?}",
        routes.len(),
        t.elapsed()
    );
    for s in &gone {
        if routes.iter().any(|(r, _)| r == s) {
            bail!("a deleted lease {s} is still routed");
        }
    }
    let log = std::fs::read_to_string(&lab.host(1).controld.log)?;
    let relisted = log.contains("fell behind a compaction") && log.contains("subnets listed again");
    eprintln!("host1's watch was cut off by the compaction and listed again: {relisted}");
    ensure!(
        relisted,
        "the paused watch was never compacted away: the test did not test compaction"
    );
    lab.assert_all_pairs_ping(2)
}
