//! A crashed kolach-dataplaned (SIGKILL) comes back forwarding within a
//! second of its new start (DESIGN §6): the TUN device and its routes stayed,
//! the new process reattaches and restores the snapshot it saved, with
//! controld running (which re-pushes) and without it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use kolach_testkit::traffic::steady_ping::{parse_replies, SteadyPing};
use kolach_testkit::{run, Lab};

#[test]
fn sigkilled_dataplane_forwards_within_a_second_of_its_start() {
    run("dpkill", crash_and_start);
}

/// 100 pps: 10 ms resolution on when forwarding is back.
const INTERVAL: Duration = Duration::from_millis(10);
/// How long the dataplane stays dead before the new start.
const DEAD_FOR: Duration = Duration::from_millis(500);

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn crash_and_start(lab: &mut Lab) -> Result<()> {
    lab.mesh(2)?;
    lab.assert_all_pairs_ping(2)?;
    let count = (Duration::from_secs(8).as_millis() / INTERVAL.as_millis()) as u32;
    let out = lab.dir.join("steady-ping.txt");
    let ping = SteadyPing::start(&lab.pod(1).ns, lab.pod(2).ip, INTERVAL, count, &out)?;
    std::thread::sleep(Duration::from_millis(500));

    // Host 2 (receiving) with its controld running; host 1 (sending) alone,
    // so only the saved snapshot can bring it back.
    let mut starts = Vec::new();
    for (n, with_controld) in [(2u8, true), (1, false)] {
        if !with_controld {
            lab.host_mut(n).controld.kill();
        }
        lab.host_mut(n).dataplaned.kill();
        std::thread::sleep(DEAD_FOR);
        let at = unix_now();
        lab.host_mut(n).dataplaned.start()?;
        starts.push((n, with_controld, at));
        std::thread::sleep(Duration::from_millis(1500));
        if !with_controld {
            lab.host_mut(n).controld.start()?;
        }
    }
    let r = ping.finish(Duration::from_secs(10))?;
    let replies = parse_replies(&std::fs::read_to_string(&out).context("ping output")?);
    let mut slow = Vec::new();
    for (n, with_controld, at) in starts {
        let first = replies
            .values()
            .filter_map(|t| *t)
            .filter(|t| *t > at)
            .fold(f64::INFINITY, f64::min);
        let back = first - at;
        eprintln!(
            "host{n}: dataplaned SIGKILLed, started again {DEAD_FOR:?} later ({}): first pod1 -> pod2 reply {:.0} ms after the start",
            if with_controld { "controld running" } else { "no controld" },
            back * 1000.0
        );
        // No reply after the start at all is infinitely late.
        if back.is_nan() || back >= 1.0 {
            slow.push(format!("host{n}: {back:.3} s"));
        }
    }
    eprintln!("steady ping across both crashes: {}", r.describe());
    ensure!(
        slow.is_empty(),
        "forwarding not back within 1 s of the start: {slow:?}"
    );
    lab.wait_control(1, Duration::from_secs(10), "pushing again", |s| {
        s.dataplane_connected && s.applied_generation > 0
    })?;
    lab.wait_converged(Duration::from_secs(5))?;
    lab.assert_all_pairs_ping(2)
}
