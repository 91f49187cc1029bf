//! A daemon stops promptly on SIGTERM even while a client holds a connection
//! and never answers (a `kolachctl` stopped with ^Z, a hung monitoring
//! script): both daemons must exit by themselves within 3 s, or systemd and
//! the restart tests would wait on a client the daemon does not need.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use kolach_testkit::process::Stopped;
use kolach_testkit::{query, run, Lab};

#[test]
fn daemons_stop_on_sigterm_despite_an_idle_client() {
    run("stopidle", stop_idle);
}

const WITHIN: Duration = Duration::from_secs(3);

/// Runs one query on a runtime of its own and returns the runtime, unpolled.
fn idle_client(
    f: impl std::future::Future<Output = Result<()>>,
) -> Result<tokio::runtime::Runtime> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), f).await? })?;
    Ok(rt)
}

fn stop_idle(lab: &mut Lab) -> Result<()> {
    lab.mesh(1)?;
    // One query each, each on a runtime that is never polled again: its
    // connection stays open and nobody answers the server's GOAWAY. (Polling
    // a runtime again would let it notice the dropped client and hang up.)
    let (c, d) = (
        lab.host(1).controld_socket(),
        lab.host(1).dataplaned_socket(),
    );
    let idle_c = idle_client(async move { query::control_status(&c).await.map(drop) })?;
    let idle_d = idle_client(async move { query::dataplane_status(&d).await.map(drop) })?;
    // Both at once: each must be gone within 3 s of its SIGTERM.
    let h = lab.host_mut(1);
    let t = Instant::now();
    h.controld.terminate();
    h.dataplaned.terminate();
    let mut failures = Vec::new();
    for p in [&mut h.controld, &mut h.dataplaned] {
        let how = p.wait_or_kill(t + WITHIN);
        eprintln!("{}: {how:?} by {:?} after SIGTERM", p.label, t.elapsed());
        if !matches!(how, Stopped::Graceful(_)) {
            failures.push(format!(
                "{} still running {WITHIN:?} after SIGTERM with an idle client connected; log ends:\n{}",
                p.label,
                p.log_tail(3)
            ));
        }
    }
    drop((idle_c, idle_d));
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
