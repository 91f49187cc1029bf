//! Helper commands that run in the background while a test does something
//! else (a steady ping, `ip monitor`): started inside a namespace with their
//! output in a file, killed with the thread that started them
//! (PR_SET_PDEATHSIG) or when dropped, so none outlives its test.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct Background {
    pub label: String,
    pub output: PathBuf,
    child: Option<Child>,
}

impl Background {
    /// `ip netns exec <ns> <program> <args>`, stdout and stderr to `output`.
    pub fn spawn(ns: &str, program: &str, args: &[&str], output: &Path) -> Result<Background> {
        let out = File::create(output).with_context(|| format!("creating {}", output.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let label = crate::cmd::describe(program, args);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting `{label}` in {ns}"))?;
        Ok(Background {
            label,
            output: output.to_path_buf(),
            child: Some(child),
        })
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the command to end by itself until `deadline`; killed and
    /// reported as an error if it has not.
    pub fn wait_until(&mut self, deadline: Instant) -> Result<ExitStatus> {
        let mut child = self.child.take().context("already waited for")?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "`{}` still running at its deadline; killed (output in {})",
                    self.label,
                    self.output.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ends the command (SIGTERM, then SIGKILL after a second) and returns its output.
    pub fn stop(mut self) -> Result<String> {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(1);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.read()
    }

    /// The output so far.
    pub fn read(&self) -> Result<String> {
        let bytes = std::fs::read(&self.output)
            .with_context(|| format!("reading {}", self.output.display()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
