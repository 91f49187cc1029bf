//! etcd stopped for 60 s while pods ping each other at 100 packets a
//! second: not one probe is lost, and afterwards every lease (key, etcd
//! lease, value), every subnet.env and every route table is what it was.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kolach_testkit::traffic::background::Background;
use kolach_testkit::traffic::steady_ping::{gaps, parse_replies};
use kolach_testkit::{lab, run, Lab};

const OUTAGE: Duration = Duration::from_secs(60);
/// ping's own timer is coarse on these machines: asking for 200 a second
/// gives well over 100.
const INTERVAL: &str = "0.005";
const MIN_PPS: f64 = 100.0;

/// A ping running for `secs` seconds; every probe below the last answered
/// one must have been answered (a probe in flight at the end is no loss).
fn start_ping(lab: &Lab, a: u8, b: u8, secs: u64) -> Result<Background> {
    let w = secs.to_string();
    let to = lab.pod(b).ip.to_string();
    Background::spawn(
        &lab.pod(a).ns,
        "ping",
        &["-n", "-D", "-W", "1", "-i", INTERVAL, "-w", &w, &to],
        &lab.dir.join(format!("ping{a}{b}.txt")),
    )
}

/// (probes answered, probes lost, pps) of a finished ping.
fn ping_result(text: &str, secs: u64) -> (u32, u32, f64) {
    let replies = parse_replies(text);
    let last = replies.keys().next_back().copied().unwrap_or(0);
    let lost: u32 = gaps(last, &replies)
        .iter()
        .map(|g| g.last - g.first + 1)
        .sum();
    (replies.len() as u32, lost, f64::from(last) / secs as f64)
}

struct State {
    leases: Vec<kolach_testkit::etcd::Kv>,
    envs: Vec<String>,
    routes: Vec<Vec<kolach_testkit::query::RouteEntry>>,
}

fn state(lab: &Lab) -> Result<State> {
    Ok(State {
        leases: lab.etcdctl().get_prefix(&lab::subnets_prefix())?,
        envs: lab
            .host_ids()
            .iter()
            .map(|&n| std::fs::read_to_string(lab.host(n).subnet_file()))
            .collect::<std::io::Result<_>>()?,
        routes: lab
            .host_ids()
            .iter()
            .map(|&n| lab.dp_routes(n))
            .collect::<Result<_>>()?,
    })
}

#[test]
fn etcd_down_for_a_minute_loses_nothing() {
    run("etcd60", |lab| {
        lab.mesh(2)?;
        let before = state(lab)?;
        // Both directions: pod1 -> pod2 and pod2 -> pod1.
        let secs = OUTAGE.as_secs() + 15;
        let started = Instant::now();
        let mut pings = [start_ping(lab, 1, 2, secs)?, start_ping(lab, 2, 1, secs)?];
        std::thread::sleep(Duration::from_secs(2));

        let etcd = lab.etcd.as_mut().context("no etcd")?;
        let t = Instant::now();
        etcd.proc.stop();
        eprintln!("etcd stopped");
        for n in lab.host_ids() {
            lab.wait_control(n, Duration::from_secs(30), "saw etcd down", |s| {
                !s.etcd_reachable
            })?;
        }
        std::thread::sleep(OUTAGE.saturating_sub(t.elapsed()));
        let etcd = lab.etcd.as_mut().context("no etcd")?;
        etcd.start(Duration::from_secs(20))?;
        eprintln!("etcd back after {:?}", t.elapsed());
        for n in lab.host_ids() {
            let s = lab.wait_control(n, Duration::from_secs(30), "saw etcd again", |s| {
                s.etcd_reachable && s.phase == "running"
            })?;
            ensure!(
                !s.warnings.iter().any(|w| w.contains("lost lease")),
                "host{n} lost its lease: {:?}",
                s.warnings
            );
        }
        for (i, p) in pings.iter_mut().enumerate() {
            p.wait_until(started + Duration::from_secs(secs + 10))?;
            let (answered, lost, pps) = ping_result(&p.read()?, secs);
            eprintln!(
                "ping {} across the outage: {answered} answered, {lost} lost, {pps:.0} pps",
                ["pod1 -> pod2", "pod2 -> pod1"][i]
            );
            ensure!(lost == 0, "{lost} probes lost");
            ensure!(pps >= MIN_PPS, "only {pps:.0} pps");
        }
        let after = state(lab)?;
        ensure!(
            after.leases == before.leases,
            "leases changed: {:?} -> {:?}",
            before.leases,
            after.leases
        );
        ensure!(after.envs == before.envs, "a subnet.env changed");
        ensure!(after.routes == before.routes, "a route table changed");
        eprintln!(
            "leases ({}) with their etcd leases and revisions, subnet.env and routes unchanged",
            after.leases.len()
        );
        Ok(())
    });
}
