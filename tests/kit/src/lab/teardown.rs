//! Taking labs apart: stopping processes gracefully with a deadline, and
//! removing namespaces and dirs, also of labs whose owner died.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::names::{self, Names};
use crate::netns;
use crate::process::{Proc, Stopped};

/// How long a lab's processes get to exit after SIGTERM at teardown. A daemon
/// is expected to exit promptly; this only bounds the wait for one that does not.
pub const TEARDOWN_GRACE: Duration = Duration::from_secs(3);

/// SIGTERM to all at once, then up to [`TEARDOWN_GRACE`] in all, then SIGKILL; a process
/// that needed SIGKILL is reported on stderr.
pub fn stop_all(mut procs: Vec<&mut Proc>) {
    for p in procs.iter_mut() {
        p.terminate();
    }
    let deadline = Instant::now() + TEARDOWN_GRACE;
    for p in procs {
        if let Stopped::Killed = p.wait_or_kill(deadline) {
            eprintln!(
                "kolach-tests: {} still running {TEARDOWN_GRACE:?} after SIGTERM; killed",
                p.label
            );
        }
    }
}

/// Removes namespaces named like this lab and its dir, stopping any process
/// in them (SIGTERM, then SIGKILL after 5 s).
pub fn destroy_leftovers(names: &Names, dir: &Path) -> Result<()> {
    let stale: Vec<String> = netns::list()?
        .into_iter()
        .filter(|ns| names.owns(ns))
        .collect();
    destroy_namespaces(&stale)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// Gracefully stops every process in `namespaces`, then deletes them.
pub fn destroy_namespaces(namespaces: &[String]) -> Result<()> {
    let mut pids = Vec::new();
    for ns in namespaces {
        pids.extend(netns::pids(ns).unwrap_or_default());
    }
    for &pid in &pids {
        // SAFETY: kill(2) on processes living in namespaces we own.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + crate::process::STOP_GRACE;
    while Instant::now() < deadline && pids.iter().any(|&p| names::pid_alive(p as u32)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut errors = Vec::new();
    for ns in namespaces {
        if let Err(e) = netns::delete(ns) {
            errors.push(format!("{e:#}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(errors.join("; ")))
    }
}
