//! What a host's podman is set up with: the cgroup mounts the holder makes
//! again, the holder script, containers.conf and storage.conf, and sweeping
//! the cgroups of crashed runs.

use super::*;

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
pub(crate) fn sh_quote(s: &str) -> String {
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

/// Removes the cgroups of hosts of test runs that died before their
/// teardown (`/<CGROUP_ROOT>/kt<pid>-...` with that pid gone; `kolach-lab
/// sweep` has killed their processes). rmdir(2) removes empty cgroups only.
pub(super) fn sweep_stale_cgroups(cgroups: &[CgroupMount]) {
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
pub(crate) fn rmdir_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}
