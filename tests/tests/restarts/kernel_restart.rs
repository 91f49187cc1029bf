//! On the kernel backends the data path is the kernel's: restarting
//! kolach-dataplaned and kolach-controld (SIGTERM + start) on the sending and
//! on the receiving host, under a 200 pps ping from pod to pod, loses no
//! packet and leaves every kolach object in the kernel as it was (same links,
//! same ifindexes, same routes, neighbours and FDB entries, and not one
//! kolach event from `ip monitor` or `bridge monitor` meanwhile).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Result};
use kolach_testkit::kernel::expected::diff;
use kolach_testkit::kernel::monitor::KernelMonitor;
use kolach_testkit::process::Stopped;
use kolach_testkit::traffic::steady_ping::SteadyPing;
use kolach_testkit::{query, run, Backend, Lab};

#[test]
fn vxlan_daemon_restarts_lose_no_packet() {
    run("vxrestart", |lab| {
        restarts_lose_nothing(lab, Backend::Vxlan)
    });
}

#[test]
fn host_gw_daemon_restarts_lose_no_packet() {
    run("gwrestart", |lab| {
        restarts_lose_nothing(lab, Backend::HostGw)
    });
}

/// 200 pps.
const INTERVAL: Duration = Duration::from_millis(5);
/// Covers the four restarts (about 2.1 s in all here, also with 4 tests at
/// once on 2 cores) more than twice over.
const PING_FOR: Duration = Duration::from_secs(6);

#[derive(Clone, Copy, Debug)]
enum Daemon {
    Dataplaned,
    Controld,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() >= within {
            bail!("{what} not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(start.elapsed())
}

/// SIGTERM (must exit by itself within 5 s), start, and wait until the daemon
/// is back at work.
fn restart(lab: &mut Lab, n: u8, which: Daemon) -> Result<()> {
    let epoch_before = lab.cd_status(n).map(|s| s.epoch).unwrap_or(0);
    let t0 = Instant::now();
    let at = unix_now();
    let host = lab.host_mut(n);
    let p = match which {
        Daemon::Dataplaned => &mut host.dataplaned,
        Daemon::Controld => &mut host.controld,
    };
    let label = p.label.clone();
    let how = p.stop_within(Duration::from_secs(5));
    ensure!(
        matches!(how, Stopped::Graceful(_)),
        "{label} did not exit within 5s of SIGTERM: {how:?}"
    );
    let stopped = t0.elapsed();
    p.start()?;
    let back = match which {
        Daemon::Dataplaned => {
            // Serving again with a snapshot (restored from the run dir), and
            // controld connected to it again.
            wait_for(
                &format!("{label} serving a snapshot"),
                Duration::from_secs(5),
                || lab.dp_status(n).is_ok_and(|s| s.has_snapshot),
            )?;
            wait_for(
                &format!("host{n}/controld reconnected"),
                Duration::from_secs(5),
                || lab.cd_status(n).is_ok_and(|s| s.dataplane_connected),
            )?
        }
        Daemon::Controld => wait_for(
            &format!("{label} pushing to the dataplane"),
            Duration::from_secs(10),
            || {
                lab.cd_status(n).is_ok_and(|s| {
                    s.epoch != epoch_before
                        && s.dataplane_connected
                        && s.applied_generation > 0
                        && query::control_subnet(&s).is_some()
                })
            },
        )?,
    };
    eprintln!(
        "{label}: SIGTERM at {at:.3}, exited after {stopped:?}, back at work {:?} after start",
        back
    );
    Ok(())
}

fn restarts_lose_nothing(lab: &mut Lab, backend: Backend) -> Result<()> {
    lab.mesh_with(2, &backend.config())?;
    lab.wait_kernel_converged(backend, Duration::from_secs(5))?;
    lab.assert_all_pairs_ping(2)?;
    let before = [lab.kernel_objects(1)?, lab.kernel_objects(2)?];
    let monitors =
        [1u8, 2].map(|n| KernelMonitor::start(&lab.host(n).ns, &lab.dir, &format!("host{n}")));
    let monitors: Vec<KernelMonitor> = monitors.into_iter().collect::<Result<_>>()?;

    let count = (PING_FOR.as_millis() / INTERVAL.as_millis()) as u32;
    let out = lab.dir.join("steady-ping.txt");
    let (from, to) = (lab.pod(1).ns.clone(), lab.pod(2).ip);
    let mut ping = SteadyPing::start(&from, to, INTERVAL, count, &out)?;
    eprintln!(
        "{backend}: pod1 -> pod2 ({to}) ping every {INTERVAL:?}, {count} probes, from {:.3}",
        unix_now()
    );
    std::thread::sleep(Duration::from_millis(500));
    // Host 1 sends, host 2 receives (and answers).
    for (n, which) in [
        (1, Daemon::Dataplaned),
        (2, Daemon::Dataplaned),
        (1, Daemon::Controld),
        (2, Daemon::Controld),
    ] {
        restart(lab, n, which)?;
        std::thread::sleep(Duration::from_millis(300));
    }
    let restarts_done = ping.started.elapsed();
    ensure!(
        ping.is_running(),
        "the restarts took {restarts_done:?}, longer than the {PING_FOR:?} ping: nothing measured the end"
    );
    let r = ping.finish(Duration::from_secs(10))?;
    let mut changes = Vec::new();
    for (i, m) in monitors.into_iter().enumerate() {
        changes.extend(m.stop()?.into_iter().map(|e| format!("host{}: {e}", i + 1)));
    }
    eprintln!(
        "{backend}: steady ping across 4 daemon restarts (done {restarts_done:?} into the ping): {}",
        r.describe()
    );
    ensure!(
        r.summary.transmitted == count && r.lost() == 0,
        "{backend}: packets lost across daemon restarts: {}",
        r.describe()
    );

    eprintln!(
        "{backend}: kolach events from ip/bridge monitor during the restarts: {}",
        changes.len()
    );
    ensure!(
        changes.is_empty(),
        "{backend}: the restarts touched kolach's kernel objects (ip/bridge monitor):\n{}",
        changes.join("\n")
    );
    for (i, b) in before.iter().enumerate() {
        let n = i as u8 + 1;
        let after = lab.kernel_objects(n)?;
        ensure!(
            after.same_as(b),
            "host{n}: the restarts changed kolach's kernel objects:\n{}",
            diff(&after, b)
        );
        ensure!(
            after.links == b.links,
            "host{n}: a kolach link was recreated (ifindex {:?} -> {:?})",
            b.links,
            after.links
        );
    }
    lab.wait_converged(Duration::from_secs(5))?;
    Ok(())
}
