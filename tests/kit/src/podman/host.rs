//! One host's podman: the holder process and every podman call through it.

use super::*;
use crate::containers::cgroups::{self, cgroup_mounts};
use crate::containers::holder::{fresh_dir, Holder};
use crate::containers::{Cli, Engine};

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
    holder: Holder,
    cgroups: Vec<CgroupMount>,
}

impl PodmanHost {
    /// Writes the configs under `dir` (created; a leftover emptied) for
    /// namespace `ns`, with `cni_plugin_dirs` = `[<dir>/plugins, /usr/lib/cni]`,
    /// and starts the holder.
    pub fn start(ns: &str, dir: &Path) -> Result<PodmanHost> {
        require_tools()?;
        let cgroups = cgroup_mounts()?;
        cgroups::sweep_stale(&cgroups, CGROUP_ROOT, false);
        fresh_dir(
            dir,
            &[
                "etc",
                "cni",
                "plugins",
                "graphroot",
                "runroot",
                "tmp",
                "volumes",
                "cni-cache",
            ],
        )?;
        let mut host = PodmanHost {
            ns: ns.to_string(),
            dir: dir.to_path_buf(),
            cni_plugin_dirs: vec![dir.join("plugins"), PathBuf::from(SYSTEM_CNI_DIR)],
            holder: Holder::default(),
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
        self.holder
            .start("podman", &self.ns, &self.dir, &script, HOLDER_READY_WITHIN)
    }

    /// Pid 1 of the holder's pid namespace, as this process sees it (the
    /// target of `nsenter -t`).
    pub fn holder_pid(&self) -> u32 {
        self.holder.pid()
    }

    /// The cgroup parent of this host's containers (`--cgroup-parent`).
    pub fn cgroup_parent(&self) -> String {
        format!("/{CGROUP_ROOT}/{}", self.ns)
    }

    /// `<hierarchy>/<CGROUP_ROOT>/<host>` in every cgroup hierarchy, as this
    /// process sees them: conmon's cgroup (`conmon`) and each container's
    /// (`libpod-<id>`) are under these.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroups::host_dirs(&self.cgroups, CGROUP_ROOT, &self.ns)
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
        self.cli().run_env(env, args, timeout)
    }

    /// [`PodmanHost::podman_env`] that must succeed within [`PODMAN_TIMEOUT`]; returns stdout.
    pub fn podman_ok(&self, env: &[(&str, &str)], args: &[&str]) -> Result<String> {
        self.cli().ok_env(env, args)
    }

    /// `podman args...` without extra environment, which must succeed.
    pub fn podman(&self, args: &[&str]) -> Result<String> {
        self.podman_ok(&[], args)
    }

    /// `podman import`s rootfs tarball `tar` as image `reference`.
    pub fn import_image(&self, tar: &Path, reference: &str) -> Result<()> {
        self.cli().import(&["-q"], tar, reference)
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
            "--name",
            name,
            "--network",
            network,
            "--cgroup-parent",
            &parent,
        ];
        full.extend_from_slice(args);
        self.cli().run_detached(env, &full)
    }

    /// The container's IPv4 address on `network`.
    pub fn inspect_ip(&self, container: &str, network: &str) -> Result<Ipv4Addr> {
        self.cli().ipv4(container, Some(network))
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
        if !self.holder.is_started() {
            return Ok(());
        }
        let mut errors = Vec::new();
        if self.holder.is_alive() && self.holder.pid() != 0 {
            if let Err(e) = self.podman(&["rm", "-a", "-f", "-t", "0"]) {
                errors.push(format!("removing containers: {e:#}"));
            }
        }
        let cgroups = self.cgroup_dirs();
        self.holder
            .end("podman", &self.ns, &self.dir, &cgroups, errors)
    }
}

impl Engine for PodmanHost {
    /// How this host's podman is called: `env -u CNI_ARGS CONTAINERS_CONF=...
    /// CONTAINERS_STORAGE_CONF=... nsenter -t <holder> -m -n -p -- podman`.
    fn cli(&self) -> Cli<'_> {
        let conf = format!("CONTAINERS_CONF={}", self.containers_conf_path().display());
        let storage = format!(
            "CONTAINERS_STORAGE_CONF={}",
            self.storage_conf_path().display()
        );
        let pid = self.holder.pid().to_string();
        Cli {
            engine: "podman",
            ns: &self.ns,
            env: vec!["-u".into(), "CNI_ARGS".into(), conf, storage],
            command: ["nsenter", "-t", &pid, "-m", "-n", "-p", "--", "podman"]
                .map(String::from)
                .to_vec(),
            timeout: PODMAN_TIMEOUT,
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
