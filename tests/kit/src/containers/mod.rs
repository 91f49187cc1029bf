//! What the podman ([`crate::podman`]) and docker ([`crate::docker`])
//! harnesses share, written once: how a host's engine CLI is called and the
//! calls that read the same on both ([`Cli`]: `run -d`'s container id,
//! `import`, `inspect`, an address; [`Engine`]: a host's `exec` and
//! `inspect`), the holder process that gives a host's engine its pid and
//! mount namespace ([`holder::Holder`]), and the cgroup mounts the holder
//! makes again and the cgroups it leaves ([`cgroups`]).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd::{self, Output};

pub mod cgroups;
pub mod holder;

#[cfg(test)]
mod tests;

/// Deadline of `exec` unless given.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// The calls that read the same on every engine's host, written once over
/// its [`Cli`]; [`crate::docker::DockerHost`] and [`crate::podman::PodmanHost`]
/// implement it (bring it into scope to call them).
pub trait Engine {
    /// How this host's engine CLI is called.
    fn cli(&self) -> Cli<'_>;

    /// `exec <container> args...` under [`EXEC_TIMEOUT`]; the exit status
    /// is the caller's business.
    fn exec(&self, container: &str, args: &[&str]) -> Result<Output> {
        self.exec_timeout(container, args, EXEC_TIMEOUT)
    }

    /// [`Engine::exec`] under `timeout`.
    fn exec_timeout(&self, container: &str, args: &[&str], timeout: Duration) -> Result<Output> {
        let mut full = vec!["exec", container];
        full.extend_from_slice(args);
        self.cli().run_env(&[], &full, timeout)
    }

    /// `inspect <container>`, parsed (the first element).
    fn inspect(&self, container: &str) -> Result<serde_json::Value> {
        self.cli().inspect(container)
    }
}

/// Fails when `missing` ([`crate::podman::missing_tools`],
/// [`crate::docker::missing_tools`]) names anything, with the Debian
/// `packages` that bring it.
pub fn require(harness: &str, missing: Vec<String>, packages: &[&str]) -> Result<()> {
    if !missing.is_empty() {
        bail!(
            "{harness} harness: missing {}: apt-get install --no-install-recommends {} (or `make deps`)",
            missing.join(", "),
            packages.join(" ")
        );
    }
    Ok(())
}

/// A container's full id, as `docker run -d` or `podman run -d` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerId(pub String);

impl ContainerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id on the last line of `run -d`'s stdout (what came before is
    /// the engine's chatter); `None` unless it is 12 or more hex digits.
    pub fn from_run_output(stdout: &str) -> Option<ContainerId> {
        let id = stdout.lines().last().unwrap_or("").trim();
        (id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| ContainerId(id.to_string()))
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How one host's engine CLI is called: `env <env>... [VAR=value]...
/// <command>... args...`. The hosts differ only in these words; every call
/// below is the same on both.
pub struct Cli<'a> {
    /// `docker`, `podman`: names the calls in errors.
    pub engine: &'static str,
    /// The host namespace, for errors.
    pub ns: &'a str,
    /// `env`'s own words first: `-u VAR` and `VAR=value` of every call.
    pub env: Vec<String>,
    /// The engine with its fixed options: `[docker, -H, unix://...]`, or
    /// `[nsenter, -t, <pid>, ..., podman]`.
    pub command: Vec<String>,
    /// Deadline of a call that must succeed ([`Cli::ok_env`]).
    pub timeout: Duration,
}

impl Cli<'_> {
    /// The engine's `args...` with `vars` added to its environment, under
    /// `timeout`. The exit status is the caller's business.
    pub fn run_env(
        &self,
        vars: &[(&str, &str)],
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output> {
        let vars: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut full: Vec<&str> = self.env.iter().map(String::as_str).collect();
        full.extend(vars.iter().map(String::as_str));
        full.extend(self.command.iter().map(String::as_str));
        full.extend_from_slice(args);
        cmd::run("env", &full, timeout)
    }

    /// [`Cli::run_env`] that must succeed within [`Cli::timeout`]; returns stdout.
    pub fn ok_env(&self, vars: &[(&str, &str)], args: &[&str]) -> Result<String> {
        let out = self.run_env(vars, args, self.timeout)?;
        if !out.success() {
            bail!(
                "in {}: `{}` failed ({}): {}",
                self.ns,
                cmd::describe(self.engine, args),
                out.status,
                out.stderr.trim()
            );
        }
        Ok(out.stdout)
    }

    /// `import <opts>... --change 'CMD ["/bin/sh"]' <tar> <reference>`:
    /// rootfs tarball `tar` as an image.
    pub fn import(&self, opts: &[&str], tar: &Path, reference: &str) -> Result<()> {
        // Absolute: podman runs (nsenter -m) in the holder's root, not our cwd.
        let tar = tar
            .canonicalize()
            .with_context(|| format!("image tarball {}", tar.display()))?;
        let tar = tar.display().to_string();
        let mut args = vec!["import"];
        args.extend_from_slice(opts);
        args.extend(["--change", r#"CMD ["/bin/sh"]"#, &tar, reference]);
        self.ok_env(&[], &args)?;
        Ok(())
    }

    /// `run -d args...` that must succeed; the new container's id.
    pub fn run_detached(&self, vars: &[(&str, &str)], args: &[&str]) -> Result<ContainerId> {
        let mut full = vec!["run", "-d"];
        full.extend_from_slice(args);
        let out = self.ok_env(vars, &full)?;
        ContainerId::from_run_output(&out)
            .ok_or_else(|| anyhow!("{} run printed no container id: {out:?}", self.engine))
    }

    /// `inspect <container>`, parsed (the first element).
    pub fn inspect(&self, container: &str) -> Result<serde_json::Value> {
        let out = self.ok_env(&[], &["inspect", container])?;
        let v: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("{} inspect", self.engine))?;
        Ok(v[0].clone())
    }

    /// The container's IPv4 address: on `network`, or (`None`) on the
    /// engine's default bridge.
    pub fn ipv4(&self, container: &str, network: Option<&str>) -> Result<Ipv4Addr> {
        let v = self.inspect(container)?;
        let settings = &v["NetworkSettings"];
        let (field, on) = match network {
            Some(n) => (&settings["Networks"][n]["IPAddress"], format!(" on {n}")),
            None => (&settings["IPAddress"], String::new()),
        };
        let ip = field
            .as_str()
            .ok_or_else(|| anyhow!("{container} has no address{on}: {v}"))?;
        ip.parse()
            .with_context(|| format!("{container}{on}: {ip:?}"))
    }
}
