//! What a host's dockerd is started with: its flags, the holder script, the
//! pids of its containers as this process sees them, and sweeping the
//! cgroups of crashed runs.

use super::*;
use crate::containers::cgroups::{self, mount_script};
use crate::containers::holder::sh_quote;

/// dockerd's flags for host namespace `ns` with everything under `dir`.
pub fn dockerd_args(dir: &Path, ns: &str, opts: &DockerOpts) -> Vec<String> {
    let d = |sub: &str| dir.join(sub).display().to_string();
    let mut args = vec![
        // Not the machine's /etc/docker/daemon.json.
        format!("--config-file={}", d("daemon.json")),
        format!("--data-root={}", d("data")),
        format!("--exec-root={}", d("exec")),
        format!("--pidfile={}", d("docker.pid")),
        format!("--host=unix://{}", d("docker.sock")),
        "--containerd-namespace=kolach".to_string(),
        "--containerd-plugins-namespace=kolach-plugins".to_string(),
        "--exec-opt=native.cgroupdriver=cgroupfs".to_string(),
        format!("--cgroup-parent=/{CGROUP_ROOT}/{ns}"),
        "--storage-driver=vfs".to_string(),
        // The README's recipe.
        format!("--bip={}", opts.bip),
        format!("--mtu={}", opts.mtu),
    ];
    if !opts.ip_masq {
        args.push("--ip-masq=false".to_string());
    }
    args.extend(opts.extra.iter().cloned());
    args
}

/// The holder's bash script: the cgroup mounts and the tmpfs on
/// `/run/docker` and `/run/containerd`, `ready` on stdout, then dockerd
/// (output to `log`) as the child of pid 1, which forwards SIGTERM to it,
/// reaps orphans (the shims) and exits when dockerd does.
pub fn holder_script(cgroups: &[CgroupMount], dockerd: &[String], log: &Path) -> String {
    let mut s = mount_script(cgroups);
    let mut cmdline = vec![sh_quote(DOCKERD)];
    cmdline.extend(dockerd.iter().map(|a| sh_quote(a)));
    s.push_str(&format!(
        "mkdir -p /run/docker /run/containerd\n\
         mount -t tmpfs -o mode=700 kolach-docker /run/docker\n\
         mount -t tmpfs -o mode=700 kolach-containerd /run/containerd\n\
         echo ready\n\
         set +e\n\
         {} >>{} 2>&1 &\n\
         pid=$!\n\
         trap 'kill -TERM $pid' TERM\n\
         while kill -0 $pid 2>/dev/null; do wait $pid; done\n",
        cmdline.join(" "),
        sh_quote(&log.display().to_string()),
    ));
    s
}

/// Fields of a `/proc/<pid>/status` line `name:`, as numbers.
fn status_numbers(status: &str, name: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The pid, as this process sees it, of the process that is `ns_pid` in the
/// pid namespace whose pid 1 is `init_pid` (ours) — e.g. a container's
/// `State.Pid` as dockerd reports it. Found in `/proc/*/status` (`NSpid`)
/// among the descendants of `init_pid`.
pub fn host_pid_of(init_pid: u32, ns_pid: u32) -> Option<u32> {
    let status = |pid: u32| fs::read_to_string(format!("/proc/{pid}/status")).ok();
    let descends = |mut pid: u32| {
        for _ in 0..64 {
            if pid == init_pid {
                return true;
            }
            match status(pid).and_then(|s| status_numbers(&s, "PPid:").first().copied()) {
                Some(parent) if parent > 1 => pid = parent,
                _ => return false,
            }
        }
        false
    };
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Some(st) = status(pid) else { continue };
        let nspid = status_numbers(&st, "NSpid:");
        // The root namespace's pid first, then the holder's.
        if nspid.len() >= 2 && nspid[1] == ns_pid && descends(pid) {
            return Some(pid);
        }
    }
    None
}

/// Removes the cgroups of hosts of test runs that died before their
/// teardown ([`cgroups::sweep_stale`] under `/<CGROUP_ROOT>`), and
/// `/<CGROUP_ROOT>` where empty.
pub fn sweep_stale_cgroups(cgroups: &[CgroupMount]) {
    cgroups::sweep_stale(cgroups, CGROUP_ROOT, true);
}
