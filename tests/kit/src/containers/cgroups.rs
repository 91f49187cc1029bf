//! The machine's cgroup mounts, which a holder mounts again (`ip netns exec`
//! gives it a `/sys` without them), and the cgroups under
//! `/<root>/<host>` that a host's containers leave behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::holder::sh_quote;

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

/// The holder script's first lines: `set -e`, then every mount of `cgroups` again.
pub fn mount_script(cgroups: &[CgroupMount]) -> String {
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
    s
}

/// The cgroup hierarchies of `cgroups` (not the tmpfs holding them).
fn hierarchies(cgroups: &[CgroupMount]) -> impl Iterator<Item = &CgroupMount> {
    cgroups.iter().filter(|m| m.fstype.starts_with("cgroup"))
}

/// `<hierarchy>/<root>/<host>` in every cgroup hierarchy, as this process sees them.
pub fn host_dirs(cgroups: &[CgroupMount], root: &str, host: &str) -> Vec<PathBuf> {
    hierarchies(cgroups)
        .map(|m| Path::new(&m.mount_point).join(root).join(host))
        .collect()
}

/// Removes the cgroups of hosts of test runs that died before their
/// teardown (`/<root>/kt<pid>-...` with that pid gone; `kolach-lab sweep`
/// or the lab has killed their processes). rmdir(2) removes empty cgroups
/// only. `/<root>` itself goes too, where empty, with `remove_root`.
pub fn sweep_stale(cgroups: &[CgroupMount], root: &str, remove_root: bool) {
    for m in hierarchies(cgroups) {
        let root = Path::new(&m.mount_point).join(root);
        let Ok(entries) = fs::read_dir(&root) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if crate::names::stale_owner(&name, crate::names::pid_alive) {
                rmdir_tree(&e.path());
            }
        }
        if remove_root {
            let _ = fs::remove_dir(&root);
        }
    }
}

/// Removes a host's cgroup `dirs` ([`host_dirs`]; empty once its processes
/// are gone), and their parent `/<root>` where no other host uses it.
pub fn remove_host_dirs(dirs: &[PathBuf]) -> Result<()> {
    let mut left = Vec::new();
    for ours in dirs {
        // A cgroup whose last process just died may be busy a moment longer.
        let deadline = Instant::now() + Duration::from_secs(2);
        while ours.exists() {
            rmdir_tree(ours);
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
