//! `kolach-lab restart` (`demo::restart`) on a demo lab of the test's own
//! names: a host's daemon is stopped, or found dead after a kill -9, and
//! started again with the command line and environment `up` gave it; the
//! dataplane restores its saved snapshot and forwards again, controld finds
//! its lease again. A pid file that names another program is not obeyed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kolach_testkit::process::{read_pid_file, PidStop};
use kolach_testkit::{names, query, traffic, Backend};
use kolach_tests::demo::{self, Daemon, State};

/// Removes the lab when the test ends, also when it fails.
struct Down {
    stem: String,
    dir: PathBuf,
}

impl Drop for Down {
    fn drop(&mut self) {
        if let Err(e) = demo::down_named(&self.stem, &self.dir) {
            eprintln!("demo_restart: tearing down {}: {e:#}", self.stem);
        }
    }
}

#[test]
fn restart_brings_a_daemon_back_with_its_command_line() {
    let stem = names::test_stem("drestart");
    let base = std::env::var_os("KOLACH_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let down = Down {
        dir: base.join(&stem),
        stem,
    };
    if let Err(e) = restarts(&down.stem, &down.dir) {
        for h in 1..=2 {
            for d in ["dataplaned", "controld"] {
                let log = down.dir.join(format!("host{h}/{d}.log"));
                eprintln!(
                    "--- {}:\n{}",
                    log.display(),
                    kolach_testkit::process::tail(&log, 15)
                );
            }
        }
        panic!("{e:#}");
    }
}

fn restarts(stem: &str, dir: &Path) -> Result<()> {
    // One queue, so that the status shows whether the restarted dataplaned
    // got the lab's environment again (with per-CPU queues it names them).
    let env = [("KOLACH_QUEUES".to_string(), "1".to_string())];
    let state = demo::up_named(stem, dir, 2, Backend::Udp, &env)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = |n: usize| {
        rt.block_on(query::dataplane_status(
            &state.hosts[n - 1]
                .run_dir
                .join(kolach_proto::DATAPLANED_SOCKET),
        ))
    };
    let before = status(1)?;
    ensure!(
        !before.mode.contains("queues"),
        "KOLACH_QUEUES=1 not taken at up: {}",
        before.mode
    );
    pings(&state, 1, 2)?;

    // A running dataplane: SIGTERM, then the same command line and environment.
    let old = pid(&state, 1, "dataplaned")?;
    let r = demo::restart(&state, 1, Daemon::Dataplaned)?;
    eprintln!("host1 dataplaned: {r:?}");
    ensure!(r.stopped == PidStop::Terminated, "{:?}", r.stopped);
    ensure!(r.pid as i32 != old, "pid {old} again");
    ensure!(
        !names::pid_alive(old as u32),
        "the old dataplaned {old} still runs"
    );
    let after = status(1)?;
    ensure!(
        after.pid == r.pid,
        "status from pid {}, not {}",
        after.pid,
        r.pid
    );
    ensure!(
        after.mode == before.mode,
        "mode {:?} after the restart, {:?} before: the environment was not kept",
        after.mode,
        before.mode
    );
    ensure!(
        after.route_count == before.route_count,
        "routes {} -> {}",
        before.route_count,
        after.route_count
    );
    pings(&state, 1, 2)?;

    // A dead dataplane (kill -9): nothing to stop, started again.
    let old = pid(&state, 2, "dataplaned")?;
    // SAFETY: kill(2) with a pid and a signal number.
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_gone(old)?;
    let r = demo::restart(&state, 2, Daemon::Dataplaned)?;
    eprintln!("host2 dataplaned: {r:?}");
    ensure!(r.stopped == PidStop::NotRunning, "{:?}", r.stopped);
    pings(&state, 2, 1)?;

    // controld comes back to its own lease.
    let subnet_env = |n: usize| {
        std::fs::read_to_string(state.hosts[n - 1].run_dir.join("subnet.env"))
            .context("reading subnet.env")
    };
    let env_before = subnet_env(2)?;
    let r = demo::restart(&state, 2, Daemon::Controld)?;
    ensure!(r.stopped == PidStop::Terminated, "{:?}", r.stopped);
    // It serves its control API before it has looked for its lease in etcd
    // (tens of ms later): wait for the first subnet it holds, then compare.
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = loop {
        let c = rt.block_on(query::control_status(
            &state.hosts[1].run_dir.join(kolach_proto::CONTROLD_SOCKET),
        ))?;
        if let Some(s) = query::control_subnet(&c) {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    ensure!(
        held.map(|s| s.to_string()).as_deref() == Some(state.hosts[1].subnet.as_str()),
        "controld of host2 holds {held:?} 10 s after its restart, not {}",
        state.hosts[1].subnet
    );
    ensure!(
        subnet_env(2)? == env_before,
        "subnet.env changed across the restart"
    );
    pings(&state, 1, 2)?;

    // A pid file naming another program: neither signalled nor counted as
    // the daemon. (This test's own pid: it would notice a SIGTERM.)
    let spec = state.hosts[0]
        .controld
        .as_ref()
        .context("no spec for host1/controld")?;
    let real = read_pid_file(&spec.pid_file).context("pid file")?;
    std::fs::write(&spec.pid_file, format!("{}\n", std::process::id()))?;
    ensure!(
        spec.running_pid().is_none(),
        "a test binary taken for controld"
    );
    ensure!(spec.stop(Duration::from_secs(1)) == PidStop::NotRunning);
    std::fs::write(&spec.pid_file, format!("{real}\n"))?;
    ensure!(
        spec.running_pid() == Some(real),
        "controld {real} not found again"
    );

    let e = demo::restart(&state, 9, Daemon::Controld)
        .unwrap_err()
        .to_string();
    ensure!(e.contains("no host 9") && e.contains("1, 2"), "{e}");
    Ok(())
}

fn pid(state: &State, n: usize, daemon: &str) -> Result<i32> {
    let file = state.hosts[n - 1].run_dir.join(format!("{daemon}.pid"));
    read_pid_file(&file).with_context(|| format!("no pid in {}", file.display()))
}

fn wait_gone(pid: i32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while names::pid_alive(pid as u32) {
        if Instant::now() > deadline {
            bail!("{pid} still there 5 s after SIGKILL");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Pod `from` reaches pod `to` within a few seconds.
fn pings(state: &State, from: usize, to: usize) -> Result<()> {
    let (a, b) = (&state.hosts[from - 1], &state.hosts[to - 1]);
    let deadline = Instant::now() + Duration::from_secs(5);
    match traffic::ping_until(&a.pod_ns, b.pod_ip, deadline, 1.0) {
        Ok(_) => Ok(()),
        Err(r) => bail!(
            "pod {} cannot reach pod {} for 5 s: {r:?}",
            a.pod_ip,
            b.pod_ip
        ),
    }
}
