//! Network namespaces: create, delete, run `ip` and other commands inside, and
//! run Rust code inside one (a thread that `setns`-es, so sockets it opens live
//! in that namespace and can then be used from any thread).
//!
//! [`Netns`] is one namespace of a single test (`kdp-<tag>-<pid>`), deleted
//! on drop, also when the test panics; its [`Netns::runtime`] is a tokio
//! runtime whose threads live inside it, for code under test run in-process.

use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cmd::{self, run, run_ok, Output};
use crate::names;

/// Where `ip netns` keeps its namespace handles.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Whether a named namespace exists.
pub fn exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// Every named namespace (`ip netns list`).
pub fn list() -> Result<Vec<String>> {
    let out = run_ok("ip", &["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Creates namespace `name`, removing a leftover of the same name first, and
/// brings its loopback up.
pub fn create(name: &str) -> Result<()> {
    if exists(name) {
        delete(name).with_context(|| format!("removing leftover namespace {name}"))?;
    }
    run_ok("ip", &["netns", "add", name])?;
    ip(name, &["link", "set", "lo", "up"])?;
    Ok(())
}

/// The pids of the processes living in namespace `name`.
pub fn pids(name: &str) -> Result<Vec<i32>> {
    let out = run_ok("ip", &["netns", "pids", name])?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Kills every process still in `name` (SIGKILL), then deletes the namespace.
/// Deleting a namespace that does not exist is not an error.
pub fn delete(name: &str) -> Result<()> {
    if !exists(name) {
        return Ok(());
    }
    for pid in pids(name).unwrap_or_default() {
        // SAFETY: plain kill(2) on a pid that lives in our own namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let out = run("ip", &["netns", "del", name], cmd::DEFAULT_TIMEOUT)?;
    if !out.success() && exists(name) {
        bail!("ip netns del {name}: {}", out.stderr.trim());
    }
    Ok(())
}

/// `ip -n <ns> <args>`, which must succeed.
pub fn ip(ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    run_ok("ip", &full)
}

/// `ip netns exec <ns> <program> <args>` under `timeout`; the exit status is the caller's business.
pub fn exec(ns: &str, program: &str, args: &[&str], timeout: Duration) -> Result<Output> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run("ip", &full, timeout)
}

/// `ip netns exec <ns> <program> <args>`, which must succeed; returns stdout.
pub fn exec_ok(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let out = exec(ns, program, args, cmd::DEFAULT_TIMEOUT)?;
    if !out.success() {
        bail!(
            "in {ns}: `{}` failed ({}): {}",
            cmd::describe(program, args),
            out.status,
            out.stderr.trim()
        );
    }
    Ok(out.stdout)
}

/// Sets a sysctl inside the namespace.
pub fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    exec_ok(ns, "sysctl", &["-qw", &format!("{key}={value}")])?;
    Ok(())
}

/// Runs `f` on a thread that has entered namespace `ns`. Sockets made in `f`
/// belong to `ns` for their whole life, wherever they are used afterwards.
pub fn within<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Result<T> + Send,
{
    let handle = File::open(netns_path(ns)).with_context(|| format!("no namespace {ns}"))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // This thread only; it ends with the scope, so no other code ever
            // runs in the namespace by accident.
            enter(ns, &handle)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| bail!("thread inside {ns} panicked"))
    })
}

/// Enters namespace `handle` on the calling thread.
fn enter(ns: &str, handle: &File) -> Result<()> {
    // SAFETY: setns(2) on a valid open namespace fd; it changes the calling
    // thread's network namespace only.
    let r = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        bail!("setns into {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A namespace of one test, `kdp-<tag>-<pid>` (a leftover of that name is
/// removed first), with loopback up; deleted on drop, every process still
/// inside it killed. Its methods panic on failure: they are test steps.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = names::single_ns(tag);
        create(&name).unwrap_or_else(|e| panic!("namespace {name}: {e:#}"));
        Netns { name }
    }

    /// `ip -n <ns> args...`, which must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        ip(&self.name, args).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `ip -n <ns> -j args...` parsed.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        serde_json::from_str(&self.ip(&full)).expect("ip -j prints JSON")
    }

    /// Whether a link exists in the namespace.
    pub fn has_link(&self, name: &str) -> bool {
        run(
            "ip",
            &["-n", &self.name, "link", "show", "dev", name],
            cmd::DEFAULT_TIMEOUT,
        )
        .is_ok_and(|o| o.success())
    }

    /// Runs a program inside the namespace (`ip netns exec`) under a 10 s
    /// `timeout`; the exit status is the caller's business.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        let mut full = vec!["10", "ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        Command::new("timeout")
            .args(&full)
            .output()
            .expect("timeout(1) runs")
    }

    /// A multi-thread tokio runtime whose worker threads (and every thread and
    /// socket they create) live in this namespace.
    pub fn runtime(&self) -> NsRuntime {
        let handle = File::open(netns_path(&self.name)).expect("namespace file");
        let ns = self.name.clone();
        let rt = std::thread::spawn(move || {
            // Threads inherit the namespace of the thread that spawns them.
            enter(&ns, &handle).expect("setns");
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
        })
        .join()
        .expect("runtime thread");
        NsRuntime { rt }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = delete(&self.name) {
            eprintln!("kolach-testkit: {e:#}");
        }
    }
}

/// A tokio runtime whose worker threads live in a [`Netns`].
pub struct NsRuntime {
    rt: tokio::runtime::Runtime,
}

impl NsRuntime {
    /// Runs `f` on a worker thread (inside the namespace) and waits for it.
    pub fn run<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.block_on(self.rt.spawn(f)).expect("task panicked")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_path_is_under_run() {
        assert_eq!(netns_path("a"), PathBuf::from("/run/netns/a"));
    }
}
