//! One host's podman: the holder process and every podman call through it.

use super::setup::{rmdir_tree, sweep_stale_cgroups};
use super::*;

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

/// Podman on one host namespace. Its methods return errors; [`Drop`] (or
/// [`PodmanHost::shutdown`]) removes every container (CNI DEL included),
/// kills the holder and with it every process and mount of this podman,
/// removes its cgroups and its dir (kept with `KOLACH_TEST_KEEP=1`).
pub struct PodmanHost {
    /// The host's network namespace.
    pub ns: String,
    /// Everything of this podman: `etc/` (containers.conf, storage.conf),
    /// `cni/` (conflists), `plugins/`, `graphroot/`, `runroot/`, `tmp/`,
    /// `cni-cache/`, `events.log`, `holder.log`.
    pub dir: PathBuf,
    cni_plugin_dirs: Vec<PathBuf>,
    /// `ip netns exec` → `unshare`; SIGKILL to it ends everything.
    holder: Option<Child>,
    /// Pid 1 of the holder's pid namespace (as this process sees it).
    init_pid: u32,
    cgroups: Vec<CgroupMount>,
}

impl PodmanHost {
    /// Writes the configs under `dir` (created; a leftover emptied) for
    /// namespace `ns`, with `cni_plugin_dirs` = `[<dir>/plugins, /usr/lib/cni]`,
    /// and starts the holder.
    pub fn start(ns: &str, dir: &Path) -> Result<PodmanHost> {
        require_tools()?;
        let cgroups = cgroup_mounts()?;
        sweep_stale_cgroups(&cgroups);
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        for sub in [
            "etc",
            "cni",
            "plugins",
            "graphroot",
            "runroot",
            "tmp",
            "volumes",
            "cni-cache",
        ] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}/{sub}", dir.display()))?;
        }
        let mut host = PodmanHost {
            ns: ns.to_string(),
            dir: dir.to_path_buf(),
            cni_plugin_dirs: vec![dir.join("plugins"), PathBuf::from(SYSTEM_CNI_DIR)],
            holder: None,
            init_pid: 0,
            cgroups,
        };
        host.write_configs()?;
        host.start_holder()?;
        Ok(host)
    }

    fn write_configs(&self) -> Result<()> {
        fs::write(
            self.containers_conf_path(),
            containers_conf(&self.dir, &self.cni_plugin_dirs),
        )?;
        fs::write(self.storage_conf_path(), storage_conf(&self.dir))?;
        Ok(())
    }

    pub fn containers_conf_path(&self) -> PathBuf {
        self.dir.join("etc/containers.conf")
    }

    pub fn storage_conf_path(&self) -> PathBuf {
        self.dir.join("etc/storage.conf")
    }

    /// The CNI config dir (`network_config_dir`).
    pub fn cni_config_dir(&self) -> PathBuf {
        self.dir.join("cni")
    }

    /// `<dir>/plugins`, first of the default `cni_plugin_dirs`: put (or link)
    /// a plugin binary such as `kolach` here.
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.join("plugins")
    }

    pub fn cni_plugin_dirs(&self) -> &[PathBuf] {
        &self.cni_plugin_dirs
    }

    /// Replaces `cni_plugin_dirs` (e.g. `[<dir holding kolach>, /usr/lib/cni]`);
    /// every later podman call, and conmon's cleanup of running containers,
    /// reads the new list.
    pub fn set_cni_plugin_dirs(&mut self, dirs: &[PathBuf]) -> Result<()> {
        self.cni_plugin_dirs = dirs.to_vec();
        self.write_configs()
    }

    /// Installs CNI network config list `json` (a `.conflist`, whose `name` is
    /// the network's name for `--network`) as `<cni dir>/<name>.conflist`.
    pub fn install_conflist(&self, json: &str) -> Result<PathBuf> {
        let v: serde_json::Value = serde_json::from_str(json).context("conflist is no JSON")?;
        let name = v["name"]
            .as_str()
            .ok_or_else(|| anyhow!("conflist has no \"name\""))?;
        if name.is_empty() || name.contains('/') {
            bail!("bad network name {name:?}");
        }
        let path = self.cni_config_dir().join(format!("{name}.conflist"));
        fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Copies `binary` into [`PodmanHost::plugin_dir`] as `name` (mode 0755).
    pub fn install_plugin(&self, binary: &Path, name: &str) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let dest = self.plugin_dir().join(name);
        fs::copy(binary, &dest)
            .with_context(|| format!("copying {} to {}", binary.display(), dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
        Ok(dest)
    }

    fn start_holder(&mut self) -> Result<()> {
        let script = holder_script(&self.cgroups, &self.dir.join("cni-cache"));
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
            .context("starting the podman holder (ip netns exec ... unshare)")?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let unshare_pid = child.id();
        self.holder = Some(child);
        let line = rx.recv_timeout(HOLDER_READY_WITHIN).unwrap_or_default();
        if line.trim() != "ready" {
            bail!(
                "podman holder in {} not ready within {HOLDER_READY_WITHIN:?}: {}",
                self.ns,
                crate::process::tail(&self.dir.join("holder.log"), 20)
            );
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        self.init_pid = loop {
            if let Some(pid) = child_of(unshare_pid) {
                break pid;
            }
            if Instant::now() > deadline {
                bail!(
                    "podman holder in {}: no child of unshare {unshare_pid}",
                    self.ns
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Ok(())
    }

    /// Pid 1 of the holder's pid namespace, as this process sees it (the
    /// target of `nsenter -t`).
    pub fn holder_pid(&self) -> u32 {
        self.init_pid
    }

    /// The cgroup parent of this host's containers (`--cgroup-parent`).
    pub fn cgroup_parent(&self) -> String {
        format!("/{CGROUP_ROOT}/{}", self.ns)
    }

    /// `<hierarchy>/<CGROUP_ROOT>/<host>` in every cgroup hierarchy, as this
    /// process sees them: conmon's cgroup (`conmon`) and each container's
    /// (`libpod-<id>`) are under these.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.cgroups
            .iter()
            .filter(|m| m.fstype.starts_with("cgroup"))
            .map(|m| Path::new(&m.mount_point).join(CGROUP_ROOT).join(&self.ns))
            .collect()
    }

    /// `podman args...` inside the holder with `env` added (CNI_ARGS is
    /// taken from `env` only, never from this process), under `timeout`. The
    /// exit status is the caller's business.
    pub fn podman_env(
        &self,
        env: &[(&str, &str)],
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output> {
        let pid = self.init_pid.to_string();
        let conf = format!("CONTAINERS_CONF={}", self.containers_conf_path().display());
        let storage = format!(
            "CONTAINERS_STORAGE_CONF={}",
            self.storage_conf_path().display()
        );
        let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut full: Vec<&str> = vec!["-u", "CNI_ARGS", &conf, &storage];
        full.extend(vars.iter().map(String::as_str));
        full.extend(["nsenter", "-t", &pid, "-m", "-n", "-p", "--", "podman"]);
        full.extend_from_slice(args);
        cmd::run("env", &full, timeout)
    }

    /// [`PodmanHost::podman_env`] that must succeed within [`PODMAN_TIMEOUT`]; returns stdout.
    pub fn podman_ok(&self, env: &[(&str, &str)], args: &[&str]) -> Result<String> {
        let out = self.podman_env(env, args, PODMAN_TIMEOUT)?;
        if !out.success() {
            bail!(
                "in {}: `{}` failed ({}): {}",
                self.ns,
                cmd::describe("podman", args),
                out.status,
                out.stderr.trim()
            );
        }
        Ok(out.stdout)
    }

    /// `podman args...` without extra environment, which must succeed.
    pub fn podman(&self, args: &[&str]) -> Result<String> {
        self.podman_ok(&[], args)
    }

    /// `podman import`s rootfs tarball `tar` as image `reference`.
    pub fn import_image(&self, tar: &Path, reference: &str) -> Result<()> {
        let tar = tar
            .canonicalize()
            .with_context(|| format!("image tarball {}", tar.display()))?;
        // nsenter -m starts podman in the holder's root, so only absolute paths work.
        self.podman(&[
            "import",
            "-q",
            "--change",
            r#"CMD ["/bin/sh"]"#,
            &tar.display().to_string(),
            reference,
        ])?;
        Ok(())
    }

    /// Builds (or takes from `cache_dir`) the busybox tarball and imports it as [`IMAGE`].
    pub fn import_busybox(&self, cache_dir: &Path) -> Result<()> {
        self.import_image(&busybox_image_tar(cache_dir)?, IMAGE)
    }

    /// `podman run -d --name <name> --network <network> --cgroup-parent
    /// <this host's> args...` with `env` in podman's environment (e.g.
    /// `[("CNI_ARGS", "K8S_POD_NAMESPACE=pool-a")]`). `args` are more `run`
    /// options, then the image and the command: `[IMAGE, "sleep", "1000"]`.
    pub fn run_detached(
        &self,
        name: &str,
        network: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<ContainerId> {
        let parent = self.cgroup_parent();
        let mut full = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            "--cgroup-parent",
            &parent,
        ];
        full.extend_from_slice(args);
        let out = self.podman_ok(env, &full)?;
        let id = out.lines().last().unwrap_or("").trim();
        if id.len() < 12 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("podman run printed no container id: {out:?}");
        }
        Ok(ContainerId(id.to_string()))
    }

    /// `podman exec <container> args...` under [`EXEC_TIMEOUT`]; the exit
    /// status is the caller's business.
    pub fn exec(&self, container: &str, args: &[&str]) -> Result<Output> {
        self.exec_timeout(container, args, EXEC_TIMEOUT)
    }

    /// [`PodmanHost::exec`] under `timeout`.
    pub fn exec_timeout(
        &self,
        container: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output> {
        let mut full = vec!["exec", container];
        full.extend_from_slice(args);
        self.podman_env(&[], &full, timeout)
    }

    /// `podman inspect <container>`, parsed (the first element).
    pub fn inspect(&self, container: &str) -> Result<serde_json::Value> {
        let out = self.podman(&["inspect", container])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("podman inspect")?;
        Ok(v[0].clone())
    }

    /// The container's IPv4 address on `network`.
    pub fn inspect_ip(&self, container: &str, network: &str) -> Result<Ipv4Addr> {
        let v = self.inspect(container)?;
        let ip = v["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .ok_or_else(|| anyhow!("{container} has no address on {network}: {v}"))?;
        ip.parse()
            .with_context(|| format!("{container} on {network}: {ip:?}"))
    }

    /// Removes a container at once (`podman rm -f -t 0`: busybox's `sleep` as
    /// pid 1 ignores SIGTERM, the default 10 s wait would only add time). CNI
    /// DEL is called with the CNI_ARGS its ADD had (libcni's cache).
    pub fn rm(&self, container: &str) -> Result<()> {
        self.podman(&["rm", "-f", "-t", "0", container])?;
        Ok(())
    }

    /// The names of every container, running or not.
    pub fn containers(&self) -> Result<Vec<String>> {
        let out = self.podman(&["ps", "-a", "--format", "{{.Names}}"])?;
        Ok(out.lines().map(|l| l.trim().to_string()).collect())
    }

    /// Removes every container (CNI DEL for each), kills the holder and so
    /// every process and mount of this podman, removes its cgroups, then its
    /// dir unless kept. Errors are collected; all steps run.
    pub fn shutdown(&mut self) -> Result<()> {
        let mut errors = Vec::new();
        let Some(mut holder) = self.holder.take() else {
            return Ok(());
        };
        if matches!(holder.try_wait(), Ok(None)) && self.init_pid != 0 {
            if let Err(e) = self.podman(&["rm", "-a", "-f", "-t", "0"]) {
                errors.push(format!("removing containers: {e:#}"));
            }
        }
        let _ = holder.kill();
        let _ = holder.wait();
        // --kill-child: unshare's death SIGKILLs pid 1, which takes its pid
        // namespace (conmon, containers) along.
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
        if !tempdir::keep() {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                errors.push(format!("removing {}: {e}", self.dir.display()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("podman host {}: {}", self.ns, errors.join("; ")))
        }
    }

    /// Removes `/<CGROUP_ROOT>/<host>` from every cgroup hierarchy (the
    /// cgroups of conmon and the containers, empty once they are gone), and
    /// `/<CGROUP_ROOT>` where no other host uses it.
    fn remove_cgroups(&self) -> Result<()> {
        let mut left = Vec::new();
        for ours in self.cgroup_dirs() {
            // A cgroup whose last process just died may be busy a moment longer.
            let deadline = Instant::now() + Duration::from_secs(2);
            while ours.exists() {
                rmdir_tree(&ours);
                if Instant::now() > deadline {
                    break;
                }
                if ours.exists() {
                    std::thread::sleep(Duration::from_millis(20));
                }
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

impl Drop for PodmanHost {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("kolach-testkit: {e:#}");
        }
    }
}
