//! Restarting kolach-controld (SIGTERM + start), 10 times on each host,
//! under a 500 pps pod-to-pod ping on the udp backend: no probe lost, the
//! same subnet every time, and the dataplane is never handed an empty,
//! partial or older table — a watcher polling both dataplanes meanwhile
//! sees the full table the whole time and versions that never go back; every
//! snapshot they applied meanwhile (their logs) held the whole table, and
//! none was refused.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use ipnet::Ipv4Net;
use kolach_proto::dataplane::SnapshotVersion;
use kolach_testkit::traffic::steady_ping::SteadyPing;
use kolach_testkit::{query, run, Lab};

#[test]
fn ten_controld_restarts_per_host_lose_nothing() {
    run("cdrestart", restarts);
}

/// 500 pps.
const INTERVAL: Duration = Duration::from_millis(2);
const RESTARTS_PER_HOST: u32 = 10;

/// What the watcher saw that must not happen.
fn watch_dataplane(
    sock: PathBuf,
    want_routes: Vec<(Ipv4Net, Ipv4Addr)>,
    stop: Arc<AtomicBool>,
) -> (u32, Vec<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut bad = Vec::new();
    let mut polls = 0;
    let mut last: Option<SnapshotVersion> = None;
    while !stop.load(Ordering::Relaxed) {
        let got = rt.block_on(async {
            let st = query::dataplane_status(&sock).await?;
            let routes = query::route_entries(&query::dataplane_routes(&sock).await?)?;
            anyhow::Ok((st, routes))
        });
        match got {
            Ok((st, routes)) => {
                polls += 1;
                if !st.has_snapshot || routes != want_routes {
                    bad.push(format!(
                        "table {routes:?} (has_snapshot {})",
                        st.has_snapshot
                    ));
                }
                if let (Some(prev), Some(v)) = (&last, &st.applied_version) {
                    let back = if prev.epoch == v.epoch {
                        v.generation < prev.generation
                    } else {
                        v.etcd_revision < prev.etcd_revision
                    };
                    if back {
                        bad.push(format!("version went back: {prev:?} -> {v:?}"));
                    }
                }
                last = st.applied_version;
            }
            Err(e) => bad.push(format!("dataplane did not answer: {e:#}")),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (polls, bad)
}

fn restarts(lab: &mut Lab) -> Result<()> {
    lab.mesh(2)?;
    let subnets = [1u8, 2].map(|n| lab.host(n).subnet_env().map(|e| e.subnet));
    let stop = Arc::new(AtomicBool::new(false));
    let watchers: Vec<_> = [1u8, 2]
        .into_iter()
        .map(|n| {
            let (sock, want, stop) = (
                lab.host(n).dataplaned_socket(),
                lab.expected_routes(n),
                stop.clone(),
            );
            std::thread::spawn(move || watch_dataplane(sock, want, stop))
        })
        .collect();

    // Every snapshot the dataplanes apply from here on is in their logs.
    let log_from: Vec<usize> = [1u8, 2]
        .iter()
        .map(|n| std::fs::metadata(&lab.host(*n).dataplaned.log).map_or(0, |m| m.len() as usize))
        .collect();
    // The 20 restarts take under 2 s here: room for a much slower machine.
    let ping_for = Duration::from_secs(10);
    let count = (ping_for.as_millis() / INTERVAL.as_millis()) as u32;
    let out = lab.dir.join("steady-ping.txt");
    let mut ping = SteadyPing::start(&lab.pod(1).ns, lab.pod(2).ip, INTERVAL, count, &out)?;
    std::thread::sleep(Duration::from_millis(300));
    let mut took = Vec::new();
    for _ in 0..RESTARTS_PER_HOST {
        for n in [1u8, 2] {
            took.push(lab.restart_controld(n)?);
            let env = lab.host(n).subnet_env().map(|e| e.subnet);
            let held = query::control_subnet(&lab.cd_status(n)?);
            ensure!(
                env == subnets[usize::from(n) - 1] && held.is_some(),
                "host{n}: subnet {held:?} / subnet.env {env:?} after a restart, was {:?}",
                subnets[usize::from(n) - 1]
            );
        }
    }
    let restarts_done = ping.started.elapsed();
    ensure!(
        ping.is_running(),
        "the restarts took {restarts_done:?}, longer than the {ping_for:?} ping"
    );
    let r = ping.finish(Duration::from_secs(10))?;
    stop.store(true, Ordering::Relaxed);
    let mut bad = Vec::new();
    let mut polls = 0;
    for (i, w) in watchers.into_iter().enumerate() {
        let (p, b) = w.join().expect("watcher");
        polls += p;
        bad.extend(b.into_iter().map(|b| format!("host{}: {b}", i + 1)));
    }
    took.sort();
    eprintln!(
        "udp: {} controld restarts (each host {RESTARTS_PER_HOST}) done {restarts_done:?} into a {INTERVAL:?}-interval ping: {}",
        took.len(),
        r.describe()
    );
    eprintln!(
        "  start -> pushing again: min {:?}, median {:?}, max {:?}; dataplane table polled {polls} times",
        took[0],
        took[took.len() / 2],
        took[took.len() - 1]
    );
    ensure!(
        r.summary.transmitted == count && r.lost() == 0,
        "packets lost across controld restarts: {}",
        r.describe()
    );
    ensure!(bad.is_empty(), "the dataplanes saw:\n{}", bad.join("\n"));
    for n in [1u8, 2] {
        let log = std::fs::read(&lab.host(n).dataplaned.log)?;
        let log = String::from_utf8_lossy(&log[log_from[usize::from(n) - 1]..]).into_owned();
        let refused: Vec<&str> = log.lines().filter(|l| l.contains("refusing")).collect();
        ensure!(
            refused.is_empty(),
            "host{n}'s dataplane refused snapshots:\n{}",
            refused.join("\n")
        );
        // Each restarted controld (a new epoch) had its first snapshot
        // applied: every one must have held the whole table.
        let applied: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("snapshot applied"))
            .collect();
        let partial: Vec<&&str> = applied.iter().filter(|l| !l.contains("routes=1")).collect();
        eprintln!(
            "  host{n}: {} snapshots applied during the restarts, {} without the full table",
            applied.len(),
            partial.len()
        );
        ensure!(
            partial.is_empty(),
            "host{n} was handed a partial table:\n{partial:?}"
        );
        ensure!(
            applied.len() >= RESTARTS_PER_HOST as usize,
            "host{n}: only {} snapshots applied across {RESTARTS_PER_HOST} restarts of its controld",
            applied.len()
        );
    }
    Ok(())
}
