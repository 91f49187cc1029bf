//! One host's Docker: the holder process running dockerd, and every docker
//! call against its socket.

use super::setup::{dockerd_args, holder_script, host_pid_of, sweep_stale_cgroups};
use super::*;
use crate::containers::cgroups::{self, cgroup_mounts};
use crate::containers::holder::{fresh_dir, Holder};
use crate::containers::{Cli, ContainerId, Engine};

/// How long the holder may take to set up its mounts.
const HOLDER_READY_WITHIN: Duration = Duration::from_secs(10);

/// dockerd on one host namespace. Its methods return errors; [`Drop`] (or
/// [`DockerHost::shutdown`]) removes every container, stops dockerd
/// (SIGTERM, then the holder killed and with it every process and mount of
/// this Docker), removes its cgroups and its dir (kept with
/// `KOLACH_TEST_KEEP=1`).
pub struct DockerHost {
    /// The host's network namespace.
    pub ns: String,
    /// Everything of this Docker: `data/` (data-root), `exec/` (exec-root,
    /// the managed containerd's config and socket under `exec/containerd/`),
    /// `cli/` (the CLI's config dir), `docker.sock`, `dockerd.log`,
    /// `holder.sh`, `holder.log`.
    pub dir: PathBuf,
    pub opts: DockerOpts,
    holder: Holder,
    cgroups: Vec<CgroupMount>,
}

impl DockerHost {
    /// Starts dockerd with `opts` in namespace `ns`, everything under `dir`
    /// (created; a leftover emptied), and waits until it answers.
    pub fn start(ns: &str, dir: &Path, opts: DockerOpts) -> Result<DockerHost> {
        require_tools()?;
        let cgroups = cgroup_mounts()?;
        sweep_stale_cgroups(&cgroups);
        fresh_dir(dir, &["data", "exec", "cli"])?;
        fs::write(dir.join("daemon.json"), "{}\n")?;
        if opts.fresh_forwarding {
            crate::netns::sysctl(ns, "net.ipv4.ip_forward", "0")?;
        }
        let mut host = DockerHost {
            ns: ns.to_string(),
            dir: dir.to_path_buf(),
            opts,
            holder: Holder::default(),
            cgroups,
        };
        host.start_holder()?;
        host.wait_answering()?;
        Ok(host)
    }

    /// `unix://<dir>/docker.sock`, for `docker -H`.
    pub fn socket(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// The last `n` lines of dockerd's (and its containerd's) log.
    pub fn log_tail(&self, n: usize) -> String {
        crate::process::tail(&self.log_path(), n)
    }

    fn start_holder(&mut self) -> Result<()> {
        let args = dockerd_args(&self.dir, &self.ns, &self.opts);
        let script = holder_script(&self.cgroups, &args, &self.log_path());
        self.holder
            .start("docker", &self.ns, &self.dir, &script, HOLDER_READY_WITHIN)
    }

    fn wait_answering(&mut self) -> Result<()> {
        let deadline = Instant::now() + DOCKERD_READY_WITHIN;
        loop {
            let out = self.docker_timeout(
                &["version", "--format", "{{.Server.Version}}"],
                Duration::from_secs(5),
            )?;
            if out.success() {
                return Ok(());
            }
            let exited = self.holder.is_started() && !self.holder.is_alive();
            if exited || Instant::now() > deadline {
                bail!(
                    "dockerd in {} not answering{}: {}\n{}",
                    self.ns,
                    if exited { " (it exited)" } else { "" },
                    out.stderr.trim(),
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pid 1 of the holder's pid namespace, as this process sees it.
    pub fn holder_pid(&self) -> u32 {
        self.holder.pid()
    }

    /// `<hierarchy>/<CGROUP_ROOT>/<host>` in every cgroup hierarchy.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroups::host_dirs(&self.cgroups, CGROUP_ROOT, &self.ns)
    }

    /// `docker -H <socket> args...` (Debian's CLI, its config dir this
    /// host's, no DOCKER_* from this process) under `timeout`. The exit
    /// status is the caller's business.
    pub fn docker_timeout(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        self.cli().run_env(&[], args, timeout)
    }

    /// `docker args...` that must succeed within [`DOCKER_TIMEOUT`]; returns stdout.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        self.cli().ok_env(&[], args)
    }

    /// `docker import`s rootfs tarball `tar` as image `reference`.
    pub fn import_image(&self, tar: &Path, reference: &str) -> Result<()> {
        self.cli().import(&[], tar, reference)
    }

    /// Builds (or takes from `cache_dir`) the busybox tarball (podman's,
    /// [`crate::podman::busybox_image_tar`]) and imports it as [`IMAGE`].
    pub fn import_busybox(&self, cache_dir: &Path) -> Result<()> {
        self.import_image(&crate::podman::busybox_image_tar(cache_dir)?, IMAGE)
    }

    /// `docker run -d --pull=never --name <name> args...`: `args` are more
    /// `run` options, then the image and the command: `[IMAGE, "sleep", "1000"]`.
    pub fn run_detached(&self, name: &str, args: &[&str]) -> Result<ContainerId> {
        let mut full = vec!["--pull=never", "--name", name];
        full.extend_from_slice(args);
        self.cli().run_detached(&[], &full)
    }

    /// The container's address on the default bridge (`docker0`, in `--bip`).
    pub fn ip(&self, container: &str) -> Result<Ipv4Addr> {
        self.cli().ipv4(container, None)
    }

    /// The pid of the container's first process as this process sees it
    /// (docker's `State.Pid` counts in the holder's pid namespace): for
    /// `nsenter -t <pid> -n` or `ip netns attach <name> <pid>`.
    pub fn pid(&self, container: &str) -> Result<u32> {
        let v = self.inspect(container)?;
        let ns_pid = v["State"]["Pid"]
            .as_u64()
            .filter(|p| *p > 0)
            .ok_or_else(|| anyhow!("{container} is not running: {}", v["State"]))?;
        let ns_pid = u32::try_from(ns_pid)?;
        host_pid_of(self.holder.pid(), ns_pid)
            .ok_or_else(|| anyhow!("{container}: no process is pid {ns_pid} under the holder"))
    }

    /// Removes a container at once (`docker rm -f`: SIGKILL).
    pub fn rm(&self, container: &str) -> Result<()> {
        self.docker(&["rm", "-f", container])?;
        Ok(())
    }

    /// The ids of every container, running or not.
    pub fn containers(&self) -> Result<Vec<String>> {
        let out = self.docker(&["ps", "-a", "-q", "--no-trunc"])?;
        Ok(out
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// Removes every container, stops dockerd (SIGTERM through the holder,
    /// [`DOCKERD_STOP_GRACE`]), kills the holder and so every process and
    /// mount left, removes its cgroups, then its dir unless kept. Errors are
    /// collected; all steps run.
    pub fn shutdown(&mut self) -> Result<()> {
        if !self.holder.is_started() {
            return Ok(());
        }
        let mut errors = Vec::new();
        let init_pid = self.holder.pid();
        if self.holder.is_alive() && init_pid != 0 {
            match self.containers() {
                Ok(ids) if !ids.is_empty() => {
                    let mut args = vec!["rm", "-f"];
                    args.extend(ids.iter().map(String::as_str));
                    if let Err(e) = self.docker(&args) {
                        errors.push(format!("removing containers: {e:#}"));
                    }
                }
                Ok(_) => {}
                Err(e) => errors.push(format!("listing containers: {e:#}")),
            }
            // SAFETY: kill(2) on the holder's pid 1, a process we started;
            // its trap hands SIGTERM to dockerd.
            unsafe { libc::kill(init_pid as i32, libc::SIGTERM) };
            let deadline = Instant::now() + DOCKERD_STOP_GRACE;
            while crate::names::pid_alive(init_pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if crate::names::pid_alive(init_pid) {
                errors.push(format!(
                    "dockerd still running {DOCKERD_STOP_GRACE:?} after SIGTERM; killed"
                ));
            }
        }
        let cgroups = self.cgroup_dirs();
        self.holder
            .end("docker", &self.ns, &self.dir, &cgroups, errors)
    }
}

/// Shuts `hosts` down side by side (dockerd takes about a second to stop);
/// every host's errors, joined.
pub fn shutdown_all(hosts: Vec<DockerHost>) -> Result<()> {
    let errors: Vec<String> = std::thread::scope(|s| {
        let running: Vec<_> = hosts
            .into_iter()
            .map(|mut h| s.spawn(move || h.shutdown()))
            .collect();
        running
            .into_iter()
            .filter_map(|t| match t.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(_) => Some("a shutdown thread panicked".to_string()),
            })
            .collect()
    });
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(errors.join("; ")))
    }
}

impl Engine for DockerHost {
    /// How this host's docker is called: Debian's CLI, its config dir this
    /// host's, no DOCKER_* from this process, `-H <socket>`.
    fn cli(&self) -> Cli<'_> {
        let mut env = Vec::new();
        for var in [
            "DOCKER_HOST",
            "DOCKER_CONTEXT",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
        ] {
            env.extend(["-u".to_string(), var.to_string()]);
        }
        env.push(format!("DOCKER_CONFIG={}", self.dir.join("cli").display()));
        Cli {
            engine: "docker",
            ns: &self.ns,
            env,
            command: vec![DOCKER.to_string(), "-H".to_string(), self.socket()],
            timeout: DOCKER_TIMEOUT,
        }
    }
}

impl Drop for DockerHost {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("kolach-testkit: {e:#}");
        }
    }
}
