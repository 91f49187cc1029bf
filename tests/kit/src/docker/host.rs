//! One host's Docker: the holder process running dockerd, and every docker
//! call against its socket.

use super::setup::{dockerd_args, holder_script, host_pid_of, sweep_stale_cgroups};
use super::*;
use crate::podman::setup::rmdir_tree;

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
    /// `ip netns exec` → `unshare`; SIGKILL to it ends everything.
    holder: Option<Child>,
    /// Pid 1 of the holder's pid namespace (as this process sees it).
    init_pid: u32,
    cgroups: Vec<CgroupMount>,
}

impl DockerHost {
    /// Starts dockerd with `opts` in namespace `ns`, everything under `dir`
    /// (created; a leftover emptied), and waits until it answers.
    pub fn start(ns: &str, dir: &Path, opts: DockerOpts) -> Result<DockerHost> {
        require_tools()?;
        let cgroups = crate::podman::cgroup_mounts()?;
        sweep_stale_cgroups(&cgroups);
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        for sub in ["data", "exec", "cli"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}/{sub}", dir.display()))?;
        }
        fs::write(dir.join("daemon.json"), "{}\n")?;
        if opts.fresh_forwarding {
            crate::netns::sysctl(ns, "net.ipv4.ip_forward", "0")?;
        }
        let mut host = DockerHost {
            ns: ns.to_string(),
            dir: dir.to_path_buf(),
            opts,
            holder: None,
            init_pid: 0,
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
        fs::write(self.dir.join("holder.sh"), &script)?;
        let log = fs::File::create(self.dir.join("holder.log"))?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"])
            .args(["bash", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting the docker holder (ip netns exec ... unshare)")?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let unshare_pid = child.id();
        self.holder = Some(child);
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        if line.trim() != "ready" {
            bail!(
                "docker holder in {} not ready: {}",
                self.ns,
                crate::process::tail(&self.dir.join("holder.log"), 20)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        self.init_pid = loop {
            if let Some(pid) = crate::podman::child_of(unshare_pid) {
                break pid;
            }
            if Instant::now() > deadline {
                bail!(
                    "docker holder in {}: no child of unshare {unshare_pid}",
                    self.ns
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Ok(())
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
            let exited = self
                .holder
                .as_mut()
                .is_some_and(|h| !matches!(h.try_wait(), Ok(None)));
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
        self.init_pid
    }

    /// `<hierarchy>/<CGROUP_ROOT>/<host>` in every cgroup hierarchy.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.cgroups
            .iter()
            .filter(|m| m.fstype.starts_with("cgroup"))
            .map(|m| Path::new(&m.mount_point).join(CGROUP_ROOT).join(&self.ns))
            .collect()
    }

    /// `docker -H <socket> args...` (Debian's CLI, its config dir this
    /// host's, no DOCKER_* from this process) under `timeout`. The exit
    /// status is the caller's business.
    pub fn docker_timeout(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        let config = format!("DOCKER_CONFIG={}", self.dir.join("cli").display());
        let host = self.socket();
        let mut full: Vec<&str> = Vec::new();
        for var in [
            "DOCKER_HOST",
            "DOCKER_CONTEXT",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
        ] {
            full.extend(["-u", var]);
        }
        full.extend([config.as_str(), DOCKER, "-H", &host]);
        full.extend_from_slice(args);
        cmd::run("env", &full, timeout)
    }

    /// `docker args...` that must succeed within [`DOCKER_TIMEOUT`]; returns stdout.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        let out = self.docker_timeout(args, DOCKER_TIMEOUT)?;
        if !out.success() {
            bail!(
                "in {}: `{}` failed ({}): {}",
                self.ns,
                cmd::describe("docker", args),
                out.status,
                out.stderr.trim()
            );
        }
        Ok(out.stdout)
    }

    /// `docker import`s rootfs tarball `tar` as image `reference`.
    pub fn import_image(&self, tar: &Path, reference: &str) -> Result<()> {
        let tar = tar
            .canonicalize()
            .with_context(|| format!("image tarball {}", tar.display()))?;
        self.docker(&[
            "import",
            "--change",
            r#"CMD ["/bin/sh"]"#,
            &tar.display().to_string(),
            reference,
        ])?;
        Ok(())
    }

    /// Builds (or takes from `cache_dir`) the busybox tarball (podman's,
    /// [`crate::podman::busybox_image_tar`]) and imports it as [`IMAGE`].
    pub fn import_busybox(&self, cache_dir: &Path) -> Result<()> {
        self.import_image(&crate::podman::busybox_image_tar(cache_dir)?, IMAGE)
    }

    /// `docker run -d --pull=never --name <name> args...`: `args` are more
    /// `run` options, then the image and the command: `[IMAGE, "sleep", "1000"]`.
    pub fn run_detached(&self, name: &str, args: &[&str]) -> Result<ContainerId> {
        let mut full = vec!["run", "-d", "--pull=never", "--name", name];
        full.extend_from_slice(args);
        let out = self.docker(&full)?;
        let id = out.lines().last().unwrap_or("").trim();
        if id.len() < 12 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("docker run printed no container id: {out:?}");
        }
        Ok(ContainerId(id.to_string()))
    }

    /// `docker exec <container> args...` under [`EXEC_TIMEOUT`]; the exit
    /// status is the caller's business.
    pub fn exec(&self, container: &str, args: &[&str]) -> Result<Output> {
        self.exec_timeout(container, args, EXEC_TIMEOUT)
    }

    /// [`DockerHost::exec`] under `timeout`.
    pub fn exec_timeout(
        &self,
        container: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output> {
        let mut full = vec!["exec", container];
        full.extend_from_slice(args);
        self.docker_timeout(&full, timeout)
    }

    /// `docker inspect <container>`, parsed (the first element).
    pub fn inspect(&self, container: &str) -> Result<serde_json::Value> {
        let out = self.docker(&["inspect", container])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("docker inspect")?;
        Ok(v[0].clone())
    }

    /// The container's address on the default bridge (`docker0`, in `--bip`).
    pub fn ip(&self, container: &str) -> Result<Ipv4Addr> {
        let v = self.inspect(container)?;
        let ip = v["NetworkSettings"]["IPAddress"]
            .as_str()
            .ok_or_else(|| anyhow!("{container} has no address: {v}"))?;
        ip.parse().with_context(|| format!("{container}: {ip:?}"))
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
        host_pid_of(self.init_pid, ns_pid)
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
        let mut errors = Vec::new();
        let Some(mut holder) = self.holder.take() else {
            return Ok(());
        };
        if matches!(holder.try_wait(), Ok(None)) && self.init_pid != 0 {
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
            unsafe { libc::kill(self.init_pid as i32, libc::SIGTERM) };
            let deadline = Instant::now() + DOCKERD_STOP_GRACE;
            while crate::names::pid_alive(self.init_pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if crate::names::pid_alive(self.init_pid) {
                errors.push(format!(
                    "dockerd still running {DOCKERD_STOP_GRACE:?} after SIGTERM; killed"
                ));
            }
        }
        let _ = holder.kill();
        let _ = holder.wait();
        // --kill-child: unshare's death SIGKILLs pid 1, which takes its pid
        // namespace (containerd, shims, containers) along.
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
        if let Err(e) = self.remove_cgroups() {
            errors.push(format!("{e:#}"));
        }
        if !crate::tempdir::keep() {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                errors.push(format!("removing {}: {e}", self.dir.display()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("docker host {}: {}", self.ns, errors.join("; ")))
        }
    }

    /// Removes `/<CGROUP_ROOT>/<host>` from every cgroup hierarchy, and
    /// `/<CGROUP_ROOT>` where no other host uses it.
    fn remove_cgroups(&self) -> Result<()> {
        let mut left = Vec::new();
        for ours in self.cgroup_dirs() {
            // A cgroup whose last process just died may be busy a moment longer.
            let deadline = Instant::now() + Duration::from_secs(2);
            while ours.exists() {
                rmdir_tree(&ours);
                if !ours.exists() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if ours.exists() {
                left.push(ours.display().to_string());
            }
            if let Some(root) = ours.parent() {
                let _ = fs::remove_dir(root);
            }
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("cgroups left: {}", left.join(", ")))
        }
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

impl Drop for DockerHost {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("kolach-testkit: {e:#}");
        }
    }
}
