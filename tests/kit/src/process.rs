//! Long-running processes inside a namespace (etcd, the daemons): started with
//! `ip netns exec`, which execs the program so the pid we hold is the daemon's;
//! stdout and stderr appended to a log file; stopped with SIGTERM or SIGKILL.
//!
//! Attached processes die with the thread that started them (PR_SET_PDEATHSIG),
//! so a test killed from outside leaves no daemon behind. Detached ones (the
//! demo) run in their own session and are found again through pid files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// How long a process gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Dies with the thread that started it; killed on teardown.
    Attached,
    /// Own session, pid file, survives the starter (the demo).
    Detached,
}

/// How a stop went.
#[derive(Debug)]
pub enum Stopped {
    /// Exited by itself after SIGTERM.
    Graceful(ExitStatus),
    /// Had to be SIGKILLed after the grace period.
    Killed,
    /// Was not running.
    NotRunning,
}

/// A process we start, stop and restart with the same command line.
#[derive(Debug)]
pub struct Proc {
    /// Short label for messages, e.g. `host2/controld`.
    pub label: String,
    pub ns: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub mode: Mode,
    /// Environment set for the process, after every inherited `KOLACH_*`
    /// variable was removed (e.g. `KOLACH_OFFLOAD=off` for one dataplane).
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

/// What it takes to start a detached process again from another process
/// (`kolach-lab restart`); the demo keeps one per daemon in its lab.json.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcSpec {
    pub label: String,
    pub ns: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    pub pid_file: PathBuf,
}

/// How a detached process found through its pid file was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PidStop {
    /// No pid file, or its pid is gone or is another program now.
    NotRunning,
    /// Exited after SIGTERM.
    Terminated,
    /// Still there after the grace period: SIGKILLed.
    Killed,
}

impl ProcSpec {
    /// The pid in the pid file, if that process still runs this program
    /// (its `argv[0]` is the spec's program: a pid reused by anything else is
    /// left alone).
    pub fn running_pid(&self) -> Option<i32> {
        let pid = read_pid_file(&self.pid_file)?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let argv0 = cmdline.split(|&b| b == 0).next()?;
        (argv0 == self.program.as_os_str().as_encoded_bytes()
            && crate::names::pid_alive(pid as u32))
        .then_some(pid)
    }

    /// SIGTERM to the running process, up to `grace` for it to go, then SIGKILL.
    pub fn stop(&self, grace: Duration) -> PidStop {
        let Some(pid) = self.running_pid() else {
            return PidStop::NotRunning;
        };
        // SAFETY: kill(2) with a pid and a signal number.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.running_pid() != Some(pid) {
                return PidStop::Terminated;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        while self.running_pid() == Some(pid) && Instant::now() < deadline + grace {
            std::thread::sleep(Duration::from_millis(10));
        }
        PidStop::Killed
    }

    /// Starts the process detached, as the lab did; returns its pid.
    pub fn start(&self) -> Result<u32> {
        let mut p = Proc::new(
            &self.label,
            &self.ns,
            &self.program,
            self.args.clone(),
            self.log.clone(),
        )
        .detached(self.pid_file.clone());
        p.env = self.env.clone();
        p.start()?;
        let pid = p.pid().context("no pid after start")?;
        p.forget();
        Ok(pid)
    }
}

impl Proc {
    /// What it takes to start this process again elsewhere; None unless
    /// it is detached (only those have a pid file to be found by).
    pub fn spec(&self) -> Option<ProcSpec> {
        Some(ProcSpec {
            label: self.label.clone(),
            ns: self.ns.clone(),
            program: self.program.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            log: self.log.clone(),
            pid_file: self
                .pid_file
                .clone()
                .filter(|_| self.mode == Mode::Detached)?,
        })
    }

    pub fn new(label: &str, ns: &str, program: &Path, args: Vec<String>, log: PathBuf) -> Self {
        Proc {
            label: label.to_string(),
            ns: ns.to_string(),
            program: program.to_path_buf(),
            args,
            log,
            pid_file: None,
            mode: Mode::Attached,
            env: Vec::new(),
            child: None,
        }
    }

    pub fn detached(mut self, pid_file: PathBuf) -> Self {
        self.mode = Mode::Detached;
        self.pid_file = Some(pid_file);
        self
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process (again). The log gets a marker line per start.
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("{} is already running", self.label);
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let env: String = self.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        writeln!(
            log,
            "=== kolach-tests: start {} at {}.{:03} in {}: {env}{} {}",
            self.label,
            now.as_secs(),
            now.subsec_millis(),
            self.ns,
            self.program.display(),
            self.args.join(" ")
        )?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The daemons read KOLACH_* flags from the environment, controld
        // flannel's FLANNELD_* too and AWS_* settings (aws-vpc): none may
        // leak in.
        for (k, _) in std::env::vars_os() {
            let k_str = k.to_string_lossy();
            if ["KOLACH_", "FLANNELD_", "AWS_"]
                .iter()
                .any(|p| k_str.starts_with(p))
            {
                cmd.env_remove(k);
            }
        }
        cmd.env_remove("NOTIFY_SOCKET").env_remove("LISTEN_FDS");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let mode = self.mode;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                if mode == Mode::Attached {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.label))?;
        if let Some(pf) = &self.pid_file {
            std::fs::write(pf, format!("{}\n", child.id()))
                .with_context(|| format!("writing {}", pf.display()))?;
        }
        self.child = Some(child);
        Ok(())
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The exit status if the process has ended on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(pid as libc::pid_t, sig) };
        }
    }

    /// SIGTERM, then up to `grace` for the process to exit, then SIGKILL.
    pub fn stop_within(&mut self, grace: Duration) -> Stopped {
        if !self.is_running() {
            self.child = None;
            return Stopped::NotRunning;
        }
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                self.child = None;
                return Stopped::Graceful(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        Stopped::Killed
    }

    /// Sends SIGTERM and returns at once (see [`Proc::wait_or_kill`]).
    pub fn terminate(&mut self) {
        if self.is_running() {
            self.signal(libc::SIGTERM);
        }
    }

    /// Waits until `deadline` for the process to exit, then SIGKILLs it.
    pub fn wait_or_kill(&mut self, deadline: Instant) -> Stopped {
        if self.child.is_none() {
            return Stopped::NotRunning;
        }
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                return Stopped::Graceful(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Stopped::Killed;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM with the default grace period.
    pub fn stop(&mut self) -> Stopped {
        self.stop_within(STOP_GRACE)
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop, then start with the same command line.
    pub fn restart(&mut self) -> Result<Stopped> {
        let s = self.stop();
        self.start()?;
        Ok(s)
    }

    /// Forgets the child without stopping it (the demo leaves it running).
    pub fn forget(&mut self) {
        self.child = None;
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.mode == Mode::Attached {
            self.kill();
        }
    }
}

/// The last `n` lines of a file, or a note that it cannot be read.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Reads a pid file written by a detached start.
pub fn read_pid_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Creates an empty file (truncating), for logs that start fresh.
pub fn fresh_file(path: &Path) -> Result<()> {
    File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(())
}

/// Sets `flag value` in a daemon's command line (replacing the value if the
/// flag is there), e.g. to point controld at other etcd endpoints.
pub fn set_flag(args: &mut Vec<String>, flag: &str, value: &str) {
    match args.iter().position(|a| a == flag) {
        Some(i) if i + 1 < args.len() => args[i + 1] = value.to_string(),
        _ => args.extend([flag.to_string(), value.to_string()]),
    }
}

/// Runs `f` on a thread of its own whose credentials are `uid` (a
/// per-thread setresuid: the rest of the test stays root), with a
/// current-thread tokio runtime for it. For testing what a daemon refuses
/// to an unprivileged caller.
pub fn as_uid<T, F, Fut>(uid: u32, f: F) -> T
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = T>,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a raw syscall (not libc's process-wide wrapper)
            // changes only this thread's credentials.
            let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
            assert_eq!(rc, 0, "setresuid({uid})");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(f())
        })
        .join()
        .expect("the thread as another uid panicked")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_replaced_or_added() {
        let mut a: Vec<String> = ["--etcd-endpoints", "http://x", "--iface", "eth0"]
            .map(String::from)
            .to_vec();
        set_flag(&mut a, "--etcd-endpoints", "http://a,http://b");
        assert_eq!(a[1], "http://a,http://b");
        set_flag(&mut a, "--etcd-cafile", "/ca.pem");
        assert_eq!(a[4..], ["--etcd-cafile", "/ca.pem"]);
    }

    #[test]
    fn tail_takes_last_lines() {
        let p = std::env::temp_dir().join(format!("kolach-tail-{}", std::process::id()));
        std::fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&p, 2), "b\nc");
        assert_eq!(tail(&p, 10), "a\nb\nc");
        std::fs::remove_file(&p).unwrap();
        assert!(tail(&p, 1).starts_with("(cannot read"));
    }
}
