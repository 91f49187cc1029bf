//! Podman on the lab's hosts: Debian's podman 4.3 with its CNI network
//! backend, run inside a host namespace, so a test can start containers on a
//! CNI network (kolach's plugin, or the reference `ptp` for the harness's own
//! test) on several hosts and send traffic between them.
//!
//! Each [`PodmanHost`] has everything of its own under one dir (configs,
//! storage, CNI configs and cache, logs) and one long-lived *holder* process:
//!
//! ```text
//! ip netns exec <host> unshare --pid --fork --kill-child --mount-proc bash -c <holder script>
//! ```
//!
//! `ip netns exec` gives it a mount namespace with the host namespace's own
//! `/sys`, which has no cgroup mounts: the script mounts the cgroup
//! filesystems again (as the machine has them, from `/proc/self/mountinfo`),
//! a private tmpfs on `/run/netns` (podman's container netns files) and on
//! `/dev/shm` (libpod's lock table), and binds `<dir>/cni-cache` on
//! `/var/lib/cni` (libcni's cache: the results and the CNI_ARGS that podman
//! gives DEL), then sleeps as pid 1 of its pid namespace. Every podman call
//! is `nsenter -t <pid 1> -m -n -p podman ...`, so all of them share those
//! mounts and podman's netns files outlive each call; conmon and the
//! containers live in that pid namespace too. Killing the holder (SIGKILL to
//! `unshare`, whose `--kill-child` then kills pid 1) ends every process of the
//! host's podman, containers included, and with the mount namespace every
//! mount it made: nothing leaks into the machine but empty cgroups, which
//! live under `/kolach-podman/<host>` (`--cgroup-parent`) and are removed,
//! and the (empty) mount point `/var/lib/cni`.
//!
//! The settings this machine needs: the CNI backend
//! (Debian's podman picks netavark otherwise), runc (crun refuses the hybrid
//! cgroup setup), cgroupfs, low `default_ulimits` (no CAP_SYS_RESOURCE: the
//! default nofile/nproc of 1048576 is above the hard limit), the `vfs` storage
//! driver (no mounts, works on any filesystem; the image is 2 MB), events to a
//! file. The image is busybox-static's `/bin/busybox` with its applets
//! ([`busybox_image_tar`]), imported offline.
//!
//! `CNI_ARGS` in podman's environment reaches the plugin (after podman's own
//! `IgnoreUnknown=1;K8S_POD_NAME=<name>`): `CNI_ARGS=K8S_POD_NAMESPACE=<pool>`
//! is how a test picks a pool. DEL gets the same args back from libcni's cache,
//! also when conmon's cleanup (whose environment has no CNI_ARGS) does it.
//! podman calls VERSION (with `CNI_NETNS=dummy`) before each ADD and DEL.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd::{self, Output};
use crate::lab::topology;
use crate::names::Names;
use crate::tempdir::{self, TempDir};

/// The busybox image every host imports ([`PodmanHost::import_busybox`]).
pub const IMAGE: &str = "localhost/kolach-busybox:1";
/// Debian's reference CNI plugins (containernetworking-plugins).
pub const SYSTEM_CNI_DIR: &str = "/usr/lib/cni";
/// busybox-static's binary, the whole image.
pub const BUSYBOX: &str = "/bin/busybox";
/// Debian packages the harness needs (`apt-get install --no-install-recommends`).
pub const DEB_PACKAGES: &[&str] = &[
    "podman",
    "runc",
    "containernetworking-plugins",
    "busybox-static",
];
/// Every container's cgroups go under `/<CGROUP_ROOT>/<host>` in each hierarchy.
pub const CGROUP_ROOT: &str = "kolach-podman";

/// How long the holder may take to set up its mounts.
const HOLDER_READY_WITHIN: Duration = Duration::from_secs(10);
/// Deadline of a podman call that starts or removes containers. One takes
/// about 0.3 s here; this only bounds a wedged one.
pub const PODMAN_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of `podman exec` unless given.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// A container's full id, as `podman run -d` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerId(pub String);

impl ContainerId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What of the harness's needs is missing on this machine (empty: all there).
pub fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    for p in [
        "/usr/bin/podman",
        "/usr/bin/conmon",
        BUSYBOX,
        "/usr/bin/nsenter",
        "/usr/bin/unshare",
    ] {
        if !Path::new(p).exists() {
            missing.push(p.to_string());
        }
    }
    if !["/usr/sbin/runc", "/usr/bin/runc"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        missing.push("runc".to_string());
    }
    for plugin in ["ptp", "host-local", "portmap"] {
        let p = Path::new(SYSTEM_CNI_DIR).join(plugin);
        if !p.exists() {
            missing.push(p.display().to_string());
        }
    }
    missing
}

/// Fails, naming the packages to install, when [`missing_tools`] finds any.
pub fn require_tools() -> Result<()> {
    let missing = missing_tools();
    if !missing.is_empty() {
        bail!(
            "podman harness: missing {}: apt-get install --no-install-recommends {} (or `make deps`)",
            missing.join(", "),
            DEB_PACKAGES.join(" ")
        );
    }
    Ok(())
}

/// Where the image tarball is cached: `$KOLACH_CACHE_DIR`, else `cache` in the
/// cargo target dir the running executable lives in, else `kolach-cache` in
/// the temp dir.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KOLACH_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Ok(exe) = std::env::current_exe() {
        // target/debug/deps/<test> or target/debug/<bin>: the dir above `debug`.
        if let Some(target) = exe
            .ancestors()
            .find(|a| a.join("CACHEDIR.TAG").is_file() || a.ends_with("target"))
        {
            return target.join("cache");
        }
    }
    std::env::temp_dir().join("kolach-cache")
}

/// 64-bit FNV-1a, to name the cached tarball after the busybox it holds.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Builds (once per busybox build; cached under `cache_dir`) the rootfs
/// tarball of the test image: `/bin/busybox` of busybox-static, a symlink per
/// applet (`sh`, `ping`, `ip`, `sleep`, `nc`, `httpd`, ...), `/etc/passwd` and
/// `/etc/group` with root, and the usual empty dirs. Returns its path.
pub fn busybox_image_tar(cache_dir: &Path) -> Result<PathBuf> {
    let bin = fs::read(BUSYBOX).with_context(|| {
        format!("reading {BUSYBOX} (Debian package busybox-static; apt-get install busybox-static)")
    })?;
    let tar = cache_dir.join(format!("kolach-busybox-{:016x}.tar", fnv1a(&bin)));
    if tar.is_file() {
        return Ok(tar);
    }
    fs::create_dir_all(cache_dir).with_context(|| format!("creating {}", cache_dir.display()))?;
    // Built beside the result and renamed into place: concurrent test
    // processes each build their own and the last rename wins, complete.
    let work = cache_dir.join(format!("kolach-busybox-build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    let rootfs = work.join("rootfs");
    let result = (|| -> Result<()> {
        for d in [
            "bin", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var",
        ] {
            fs::create_dir_all(rootfs.join(d))?;
        }
        let busybox = rootfs.join("bin/busybox");
        fs::write(&busybox, &bin)?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&busybox, fs::Permissions::from_mode(0o755))?;
        let applets = cmd::run_ok(BUSYBOX, &["--list"])?;
        for applet in applets.lines().map(str::trim) {
            if applet.is_empty() || applet == "busybox" || applet.contains('/') {
                continue;
            }
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
        fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
        let partial = work.join("image.tar");
        let (r, p) = (rootfs.display().to_string(), partial.display().to_string());
        cmd::run_ok(
            "tar",
            &[
                "--numeric-owner",
                "--owner=0",
                "--group=0",
                "--sort=name",
                "--mtime=@0",
                "-C",
                &r,
                "-cf",
                &p,
                ".",
            ],
        )?;
        fs::rename(&partial, &tar)?;
        Ok(())
    })();
    let _ = fs::remove_dir_all(&work);
    result.with_context(|| format!("building the busybox image tarball {}", tar.display()))?;
    Ok(tar)
}

/// A cgroup filesystem (or the tmpfs holding them) as the machine has it mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: String,
    /// `tmpfs`, `cgroup` or `cgroup2`.
    pub fstype: String,
    /// The options to mount it again with (controllers, `name=`).
    pub options: String,
}

/// The mounts at and under `/sys/fs/cgroup` in a `/proc/<pid>/mountinfo` text, in order.
pub fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = pre.split_whitespace().nth(4) else {
            continue;
        };
        if mount_point != "/sys/fs/cgroup" && !mount_point.starts_with("/sys/fs/cgroup/") {
            continue;
        }
        let mut post = post.split_whitespace();
        let (Some(fstype), Some(_source)) = (post.next(), post.next()) else {
            continue;
        };
        let super_opts = post.next().unwrap_or("");
        let options = match fstype {
            "tmpfs" => "mode=755".to_string(),
            "cgroup" | "cgroup2" => {
                let opts: Vec<&str> = super_opts
                    .split(',')
                    .filter(|o| !o.is_empty() && *o != "rw" && *o != "ro")
                    .filter(|o| !o.starts_with("release_agent="))
                    .collect();
                let named_only = fstype == "cgroup"
                    && !opts.is_empty()
                    && opts.iter().all(|o| o.starts_with("name=") || *o == "xattr");
                let mut opts = opts.join(",");
                if named_only {
                    opts = format!("none,{opts}");
                }
                opts
            }
            _ => continue,
        };
        mounts.push(CgroupMount {
            mount_point: mount_point.to_string(),
            fstype: fstype.to_string(),
            options,
        });
    }
    mounts
}

/// The machine's cgroup mounts (as this process sees them).
pub fn cgroup_mounts() -> Result<Vec<CgroupMount>> {
    let info = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mounts = parse_cgroup_mounts(&info);
    if !mounts.iter().any(|m| m.fstype.starts_with("cgroup")) {
        bail!("no cgroup filesystem mounted under /sys/fs/cgroup: runc needs one");
    }
    Ok(mounts)
}

/// Single-quotes `s` for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The holder's bash script: mounts, then `ready` on stdout, then sleep as pid 1.
pub fn holder_script(cgroups: &[CgroupMount], cni_cache: &Path) -> String {
    let mut s = String::from("set -e\n");
    for m in cgroups {
        let mp = sh_quote(&m.mount_point);
        let opts = if m.options.is_empty() {
            String::new()
        } else {
            format!("-o {} ", sh_quote(&m.options))
        };
        s.push_str(&format!(
            "mkdir -p {mp}\nmount -t {} {opts}kolach-{} {mp}\n",
            m.fstype, m.fstype
        ));
    }
    let cache = sh_quote(&cni_cache.display().to_string());
    s.push_str(&format!(
        "mount -t tmpfs -o mode=755 kolach-netns /run/netns\n\
         mount -t tmpfs -o mode=1777 kolach-shm /dev/shm\n\
         mkdir -p /var/lib/cni {cache}\n\
         mount --bind {cache} /var/lib/cni\n\
         echo ready\n\
         trap '' CHLD\n\
         exec sleep infinity\n"
    ));
    s
}

/// The contents of a host's containers.conf.
pub fn containers_conf(dir: &Path, cni_plugin_dirs: &[PathBuf]) -> String {
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let plugin_dirs: Vec<String> = cni_plugin_dirs.iter().map(|d| q(d)).collect();
    format!(
        r#"# written by kolach-testkit's podman harness
[containers]
# No CAP_SYS_RESOURCE here: podman's default (1048576) is above the hard limits.
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
log_driver = "k8s-file"

[network]
network_backend = "cni"
network_config_dir = {cni}
cni_plugin_dirs = [{plugin_dirs}]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = {events}
runtime = "runc"
tmp_dir = {tmp}
volume_path = {volumes}
"#,
        cni = q(&dir.join("cni")),
        plugin_dirs = plugin_dirs.join(", "),
        events = q(&dir.join("events.log")),
        tmp = q(&dir.join("tmp")),
        volumes = q(&dir.join("volumes")),
    )
}

/// The contents of a host's storage.conf.
pub fn storage_conf(dir: &Path) -> String {
    format!(
        "# written by kolach-testkit's podman harness\n\
         [storage]\n\
         driver = \"vfs\"\n\
         runroot = {:?}\n\
         graphroot = {:?}\n",
        dir.join("runroot").display().to_string(),
        dir.join("graphroot").display().to_string(),
    )
}

/// The pid whose parent is `ppid`, if any (the first found).
fn child_of(ppid: u32) -> Option<u32> {
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

/// Removes the cgroups of hosts of test runs that died before their
/// teardown (`/<CGROUP_ROOT>/kt<pid>-...` with that pid gone; `kolach-lab
/// sweep` has killed their processes). rmdir(2) removes empty cgroups only.
fn sweep_stale_cgroups(cgroups: &[CgroupMount]) {
    for m in cgroups.iter().filter(|m| m.fstype.starts_with("cgroup")) {
        let root = Path::new(&m.mount_point).join(CGROUP_ROOT);
        let Ok(entries) = fs::read_dir(&root) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if crate::names::stale_owner(&name, crate::names::pid_alive) {
                rmdir_tree(&e.path());
            }
        }
    }
}

/// rmdir(2) of a cgroup dir and every cgroup under it, deepest first (their
/// files cannot and need not be removed).
fn rmdir_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

impl Drop for PodmanHost {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("kolach-testkit: {e:#}");
        }
    }
}

/// Hosts on an underlay, each running podman: `<stem>-u` (bridge `br0`,
/// 198.18.0.254) and `<stem>-h<n>` (`eth0` 198.18.0.n, forwarding on), as in
/// [`crate::lab::topology`]. Dropping it shuts every [`PodmanHost`] down, then
/// removes the namespaces (every process left in them killed) and the dir;
/// also when the test panics.
pub struct PodmanLab {
    pub names: Names,
    /// `hosts[0]` is host 1.
    pub hosts: Vec<PodmanHost>,
    namespaces: Vec<String>,
    /// Last field: removed after the hosts' dirs inside it.
    dir: TempDir,
}

impl PodmanLab {
    /// `n` hosts named from `short` (`kt<pid>-<k><short>`), the busybox image
    /// (cached in [`default_cache_dir`]) imported on each.
    pub fn new(short: &str, n: u8) -> Result<PodmanLab> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the podman harness needs root: it creates network namespaces");
        }
        require_tools()?;
        let names = Names::new(crate::names::test_stem(short));
        let mut lab = PodmanLab {
            dir: TempDir::new(&format!("podman-{short}")),
            names,
            hosts: Vec::new(),
            namespaces: Vec::new(),
        };
        let u = lab.names.underlay();
        lab.namespaces.push(u.clone());
        topology::create_underlay(&u)?;
        let tar = busybox_image_tar(&default_cache_dir())?;
        for k in 1..=n {
            let ns = lab.names.host(k);
            lab.namespaces.push(ns.clone());
            topology::create_host(&u, &ns, k)?;
            let host = PodmanHost::start(&ns, &lab.dir.path().join(format!("h{k}")))?;
            lab.hosts.push(host);
            lab.hosts[usize::from(k) - 1].import_image(&tar, IMAGE)?;
        }
        Ok(lab)
    }

    /// Host `k` (1-based).
    pub fn host(&self, k: u8) -> &PodmanHost {
        &self.hosts[usize::from(k) - 1]
    }

    /// Host `k` (1-based), mutable.
    pub fn host_mut(&mut self, k: u8) -> &mut PodmanHost {
        &mut self.hosts[usize::from(k) - 1]
    }

    /// Underlay address of host `k`.
    pub fn host_ip(k: u8) -> Ipv4Addr {
        topology::host_ip(k)
    }

    /// The lab's dir (each host's under `h<k>`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PodmanLab {
    fn drop(&mut self) {
        for mut h in self.hosts.drain(..) {
            if let Err(e) = h.shutdown() {
                eprintln!("kolach-testkit: {e:#}");
            }
        }
        if let Err(e) = crate::lab::destroy_namespaces(&self.namespaces) {
            eprintln!("kolach-testkit: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd,release_agent=/x
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
45 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
";

    #[test]
    fn cgroup_mounts_of_a_hybrid_machine() {
        let m = parse_cgroup_mounts(MOUNTINFO);
        let got: Vec<(&str, &str, &str)> = m
            .iter()
            .map(|m| {
                (
                    m.mount_point.as_str(),
                    m.fstype.as_str(),
                    m.options.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("/sys/fs/cgroup", "tmpfs", "mode=755"),
                ("/sys/fs/cgroup/cpu", "cgroup", "cpu"),
                (
                    "/sys/fs/cgroup/systemd",
                    "cgroup",
                    "none,xattr,name=systemd"
                ),
                ("/sys/fs/cgroup/unified", "cgroup2", ""),
            ]
        );
        let script = holder_script(&m, Path::new("/d/cni-cache"));
        assert!(script.contains("mount -t cgroup -o 'cpu' kolach-cgroup '/sys/fs/cgroup/cpu'"));
        assert!(script.contains("mount -t cgroup2 kolach-cgroup2 '/sys/fs/cgroup/unified'"));
        assert!(script.contains("mount --bind '/d/cni-cache' /var/lib/cni"));
        // Orphans are reaped by the kernel only once the mounts' exit codes are read.
        assert!(script.find("trap '' CHLD") > script.find("echo ready"));
    }

    #[test]
    fn cgroup2_only_machine() {
        let m = parse_cgroup_mounts(
            "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].options, "nsdelegate,memory_recursiveprot");
    }

    #[test]
    fn configs_name_the_host_dirs() {
        let d = Path::new("/x/h1");
        let c = containers_conf(d, &[d.join("plugins"), PathBuf::from(SYSTEM_CNI_DIR)]);
        assert!(c.contains(r#"network_backend = "cni""#));
        assert!(c.contains(r#"cni_plugin_dirs = ["/x/h1/plugins", "/usr/lib/cni"]"#));
        assert!(c.contains(r#"network_config_dir = "/x/h1/cni""#));
        assert!(c.contains(r#"runtime = "runc""#));
        let s = storage_conf(d);
        assert!(s.contains(r#"graphroot = "/x/h1/graphroot""#));
        assert!(s.contains(r#"driver = "vfs""#));
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
