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
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd::{self, Output};
use crate::lab::topology;
use crate::names::Names;
use crate::tempdir::TempDir;

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
    crate::containers::require("podman", missing_tools(), DEB_PACKAGES)
}

mod host;
mod image;
mod lab;
mod setup;

pub use crate::containers::cgroups::{cgroup_mounts, parse_cgroup_mounts, CgroupMount};
pub use crate::containers::{ContainerId, Engine, EXEC_TIMEOUT};
pub use host::PodmanHost;
pub use image::{busybox_image_tar, default_cache_dir};
pub use lab::PodmanLab;
pub use setup::{containers_conf, holder_script, storage_conf};

#[cfg(test)]
mod tests;
