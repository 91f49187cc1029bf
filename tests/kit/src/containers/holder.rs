//! A host's *holder*: `ip netns exec <host> unshare --pid --fork
//! --kill-child --mount-proc bash -c <script>`, whose pid and mount
//! namespaces hold every process and mount of the host's engine, so that
//! killing it ends them all. The script is the engine's; it says `ready`
//! once its mounts are made.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::cgroups::remove_host_dirs;

/// Single-quotes `s` for sh.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The pid whose parent is `ppid`, if any (the first found).
pub(crate) fn child_of(ppid: u32) -> Option<u32> {
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(ppid) {
            return Some(pid);
        }
    }
    None
}

/// One host's holder; not started until [`Holder::start`].
#[derive(Debug, Default)]
pub struct Holder {
    /// `ip netns exec` → `unshare`; SIGKILL to it ends everything.
    child: Option<Child>,
    /// Pid 1 of the holder's pid namespace (as this process sees it).
    init_pid: u32,
}

impl Holder {
    /// Writes `script` to `<dir>/holder.sh` and runs it in namespace `ns`
    /// (stderr to `<dir>/holder.log`), waits up to `ready_within` for its
    /// `ready`, then finds its pid 1. `engine` names it in errors. Kept
    /// from the moment it is spawned, so a failed start is still ended by
    /// [`Holder::end`].
    pub fn start(
        &mut self,
        engine: &str,
        ns: &str,
        dir: &Path,
        script: &str,
        ready_within: Duration,
    ) -> Result<()> {
        fs::write(dir.join("holder.sh"), script)?;
        let log = fs::File::create(dir.join("holder.log"))?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"])
            .args(["bash", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the {engine} holder (ip netns exec ... unshare)"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let unshare_pid = child.id();
        self.child = Some(child);
        let line = rx.recv_timeout(ready_within).unwrap_or_default();
        if line.trim() != "ready" {
            bail!(
                "{engine} holder in {ns} not ready within {ready_within:?}: {}",
                crate::process::tail(&dir.join("holder.log"), 20)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        self.init_pid = loop {
            if let Some(pid) = child_of(unshare_pid) {
                break pid;
            }
            if Instant::now() > deadline {
                bail!("{engine} holder in {ns}: no child of unshare {unshare_pid}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Ok(())
    }

    /// Pid 1 of the holder's pid namespace, as this process sees it (0
    /// before it is known).
    pub fn pid(&self) -> u32 {
        self.init_pid
    }

    /// Started and not yet ended.
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// Started, not ended, and `unshare` has not exited.
    pub fn is_alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The end of a host's shutdown, once its engine has been asked to stop
    /// (`errors` are what that left): kills the holder and so every process
    /// and mount left, removes the host's `cgroups` ([`super::cgroups::host_dirs`]),
    /// then `dir` unless kept (`KOLACH_TEST_KEEP=1`). All steps run; every
    /// error comes back, joined under `<engine> host <ns>`.
    pub fn end(
        &mut self,
        engine: &str,
        ns: &str,
        dir: &Path,
        cgroups: &[PathBuf],
        mut errors: Vec<String>,
    ) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // --kill-child: unshare's death SIGKILLs pid 1, which takes its pid
        // namespace (the engine's daemons, the containers) along.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.init_pid != 0 && crate::names::pid_alive(self.init_pid) {
            if Instant::now() > deadline {
                // SAFETY: kill(2) on the holder's pid 1, a process we started.
                unsafe { libc::kill(self.init_pid as i32, libc::SIGKILL) };
                errors.push(format!("holder pid {} outlived unshare", self.init_pid));
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Err(e) = remove_host_dirs(cgroups) {
            errors.push(format!("{e:#}"));
        }
        if !crate::tempdir::keep() {
            if let Err(e) = fs::remove_dir_all(dir) {
                errors.push(format!("removing {}: {e}", dir.display()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("{engine} host {ns}: {}", errors.join("; ")))
        }
    }
}

/// Empties `dir` (a leftover of an earlier run) and creates it with `subs`.
pub fn fresh_dir(dir: &Path, subs: &[&str]) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    for sub in subs {
        fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}/{sub}", dir.display()))?;
    }
    Ok(())
}
