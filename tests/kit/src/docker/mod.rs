//! Docker on the lab's hosts: Debian's `docker.io` (dockerd 20.10 with its
//! own managed containerd 1.6 and runc), one dockerd per host namespace, so a
//! test can follow the README's recipe (`dockerd --bip=${KOLACH_SUBNET}
//! --mtu=${KOLACH_MTU}`) on several hosts and send traffic between their
//! containers.
//!
//! Each [`DockerHost`] has everything of its own under one dir and one
//! *holder* process ([`crate::containers::holder`]), as podman's
//! ([`crate::podman`]) has:
//!
//! ```text
//! ip netns exec <host> unshare --pid --fork --kill-child --mount-proc bash -c <holder script>
//! ```
//!
//! The script mounts the cgroup filesystems again (`ip netns exec` gives a
//! `/sys` without them), a private tmpfs on `/run/docker` (dockerd's plugin
//! dir, fixed) and on `/run/containerd` (containerd's shim sockets
//! `s/<hash>` and runc's state, fixed: without the tmpfs they would be the
//! machine's, and a system containerd's socket there would be taken instead of
//! a managed one), then starts dockerd as its child and waits. dockerd runs
//! with the host's own `--data-root`, `--exec-root`, `--pidfile` and `-H
//! unix://<dir>/docker.sock`; its managed containerd takes every path from
//! them (config `<exec-root>/containerd/containerd.toml`, socket
//! `<exec-root>/containerd/containerd.sock`, root
//! `<data-root>/containerd/daemon`), so two dockerds on one machine never
//! meet. The docker CLI (`/usr/bin/docker`, Debian's, with a config dir of
//! the host's own) talks to that socket from outside.
//!
//! Every process of the host's Docker (dockerd, containerd, the shims, the
//! containers) lives in the holder's pid namespace and every mount it makes
//! (the data-root bind, the containers' netns files and rootfs mounts) in its
//! mount namespace: killing the holder (SIGKILL to `unshare`, whose
//! `--kill-child` kills pid 1) ends them all and with the mount namespace
//! every mount. `kolach-lab sweep` does that for a test that died: the holder
//! lives in the host's network namespace, whose processes it kills. Left on the
//! machine are only the empty mount points `/run/docker`, `/run/containerd`
//! and the containers' (empty) cgroups under `/kolach-docker/<host>`
//! (`--cgroup-parent`), removed at shutdown and, for dead tests, at the next
//! start. Docker's iptables chains and rules live in the host's network
//! namespace and go with it.
//!
//! Settings this machine needs: `--exec-opt native.cgroupdriver=cgroupfs`
//! (no systemd as pid 1; runc handles the hybrid v1 hierarchy), the `vfs`
//! storage driver (no overlay mounts, any filesystem; the image is 2 MB).
//! Otherwise Docker's defaults: iptables on, `--ip-forward` on, which on a
//! host whose `net.ipv4.ip_forward` was 0 sets the FORWARD policy to DROP
//! ([`DockerOpts::fresh_forwarding`] makes a lab host look like that). No
//! registry is ever asked: the image is busybox-static's binary imported
//! offline ([`DockerHost::import_busybox`]) and every `run` says `--pull=never`.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd::Output;
use crate::containers::cgroups::CgroupMount;

/// The busybox image every host imports ([`DockerHost::import_busybox`]).
pub const IMAGE: &str = "kolach-busybox:test";
/// Debian's docker CLI (`/usr/local/bin/docker` may be another's).
pub const DOCKER: &str = "/usr/bin/docker";
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian packages the harness needs (`apt-get install --no-install-recommends`).
pub const DEB_PACKAGES: &[&str] = &["docker.io", "busybox-static"];
/// Every container's cgroups go under `/<CGROUP_ROOT>/<host>` in each hierarchy.
pub const CGROUP_ROOT: &str = "kolach-docker";

/// How long dockerd may take to answer on its socket (about 1 s here).
pub const DOCKERD_READY_WITHIN: Duration = Duration::from_secs(30);
/// Deadline of a docker call that starts or removes containers. One takes
/// about 0.4 s here; this only bounds a wedged one.
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long dockerd gets to stop after SIGTERM before the holder is killed.
const DOCKERD_STOP_GRACE: Duration = Duration::from_secs(5);

/// How a host's dockerd is started: the README's recipe plus the options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerOpts {
    /// `--bip`: `KOLACH_SUBNET` of the host's subnet.env (`10.50.7.1/24`).
    pub bip: String,
    /// `--mtu`: `KOLACH_MTU`.
    pub mtu: u32,
    /// `--ip-masq`: Docker's default (true) adds `-s <bip net> ! -o docker0
    /// -j MASQUERADE`; false when kolach masquerades (`--ip-masq` of controld).
    pub ip_masq: bool,
    /// Sets the host namespace's `net.ipv4.ip_forward` to 0 before dockerd
    /// starts, as on a machine nobody turned forwarding on: dockerd turns it
    /// on and, only then, sets the FORWARD policy to DROP. The lab's hosts
    /// forward from their creation.
    pub fresh_forwarding: bool,
    /// More dockerd flags.
    pub extra: Vec<String>,
}

impl DockerOpts {
    /// The README's recipe from a host's subnet.env text: `. subnet.env;
    /// dockerd --bip=${KOLACH_SUBNET} --mtu=${KOLACH_MTU}`, on a fresh host.
    pub fn from_subnet_env(text: &str) -> Result<DockerOpts> {
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
                .ok_or_else(|| anyhow!("subnet.env has no {name}: {text:?}"))
        };
        let mtu = var("KOLACH_MTU")?;
        Ok(DockerOpts {
            bip: var("KOLACH_SUBNET")?,
            mtu: mtu.parse().with_context(|| format!("KOLACH_MTU={mtu:?}"))?,
            ip_masq: true,
            fresh_forwarding: true,
            extra: Vec::new(),
        })
    }

    /// The same with `--ip-masq=false`.
    pub fn without_ip_masq(mut self) -> Self {
        self.ip_masq = false;
        self
    }
}

/// What of the harness's needs is missing on this machine (empty: all there).
pub fn missing_tools() -> Vec<String> {
    let mut missing: Vec<String> = [
        DOCKER,
        DOCKERD,
        "/usr/bin/containerd",
        "/usr/bin/containerd-shim-runc-v2",
        crate::podman::BUSYBOX,
        "/usr/bin/unshare",
    ]
    .iter()
    .filter(|p| !Path::new(p).exists())
    .map(|p| p.to_string())
    .collect();
    if !["/usr/sbin/runc", "/usr/bin/runc"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        missing.push("runc".to_string());
    }
    if !["/usr/sbin/iptables", "/sbin/iptables"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        missing.push("iptables".to_string());
    }
    missing
}

/// Fails, naming the packages to install, when [`missing_tools`] finds any.
pub fn require_tools() -> Result<()> {
    crate::containers::require("docker", missing_tools(), DEB_PACKAGES)
}

mod host;
mod setup;

pub use crate::containers::{ContainerId, Engine, EXEC_TIMEOUT};
pub use host::{shutdown_all, DockerHost};
pub use setup::{dockerd_args, holder_script, host_pid_of, sweep_stale_cgroups};

#[cfg(test)]
mod tests;
