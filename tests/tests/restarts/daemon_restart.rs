//! Either daemon can go away while the other runs on (DESIGN §6): without
//! controld the dataplane forwards on with its last snapshot; a dataplane that
//! crashed restores the snapshot it saved in the run dir and forwards within a
//! second or two, even before controld is back; controld re-pushes when it is.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use kolach_testkit::{query, run, traffic, Lab};

#[test]
fn traffic_survives_either_daemon_going_away() {
    run("dpcrash", survive);
}

/// Waits for the first reply pod a → pod b, at most `within`.
fn reachable_within(lab: &Lab, a: u8, b: u8, within: Duration) -> Result<Duration> {
    let start = Instant::now();
    match traffic::ping_until(&lab.pod(a).ns, lab.pod(b).ip, start + within, 0.2) {
        Ok(t) => Ok(t - start),
        Err(last) => anyhow::bail!(
            "pod{a} -> pod{b} unreachable for {within:?}: {}",
            last.output.trim()
        ),
    }
}

fn survive(lab: &mut Lab) -> Result<()> {
    lab.mesh(2)?;
    let routes_before = lab.dp_routes(2)?;

    // 1. controld crashes: the dataplane forwards on.
    lab.host_mut(2).controld.kill();
    lab.assert_all_pairs_ping(3)?;

    // 2. dataplaned crashes too, and comes back alone: snapshot restored from disk.
    lab.host_mut(2).dataplaned.kill();
    let started = Instant::now();
    lab.host_mut(2).dataplaned.start()?;
    let deadline = started + Duration::from_secs(2);
    let status = loop {
        if let Ok(s) = lab.dp_status(2) {
            if s.has_snapshot {
                break s;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "restarted dataplaned has no snapshot 2s after start (none restored from the run dir)"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    ensure!(
        status.route_count == 1,
        "restored route_count {}",
        status.route_count
    );
    ensure!(
        lab.dp_routes(2)? == routes_before,
        "restored routes differ from the ones applied before the crash"
    );
    for (a, b) in [(1, 2), (2, 1)] {
        let t = reachable_within(lab, a, b, Duration::from_secs(2))?;
        eprintln!("pod{a} -> pod{b} reachable {t:?} after dataplaned restart (no controld)");
    }
    lab.assert_all_pairs_ping(3)?;

    // 3. controld returns and pushes to the running dataplane.
    lab.host_mut(2).controld.start()?;
    lab.wait_control(2, Duration::from_secs(10), "pushed to the dataplane", |s| {
        s.dataplane_connected && s.applied_generation > 0 && query::control_subnet(s).is_some()
    })?;
    lab.wait_converged(Duration::from_secs(5))?;
    lab.assert_all_pairs_ping(3)
}
