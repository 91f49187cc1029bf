//! A real systemd to run the package under: a Debian bookworm tree made with
//! `debootstrap --variant=minbase` (cached; `make deps-nspawn`) booted with
//! `systemd-nspawn --boot` in a lab's namespace, one [`Machine`] per host.
//!
//! This machine has no systemd as PID 1 and no machined, hence
//! `--register=no --keep-unit`. A container joins a namespace the lab made
//! (`--network-namespace-path`) instead of nspawn's own veth
//! (`--network-veth`), so it sits on the lab's underlay like any host and
//! nothing of it appears in the root namespace. Its root is the cached tree
//! under a tmpfs overlay (`--volatile=overlay`): installs and state vanish
//! with the container, and two containers share one tree.

mod machine;

use std::path::{Path, PathBuf};

use anyhow::Result;

pub use machine::{Machine, MachineSpec};

/// What the tree holds besides minbase: an init, `ip` and `ping` (pods),
/// `ps` (looking at the daemons), dbus (what systemd expects next to it),
/// `nft` and `iptables` (the dataplane's firewall, which the package
/// suggests).
/// Kept in step with NSPAWN_PACKAGES in the Makefile, which writes the list
/// into the stamp next to the tree.
pub const PACKAGES: &str =
    "systemd,systemd-sysv,dbus,iproute2,iputils-ping,procps,nftables,iptables";

/// The cached tree: `$KOLACH_NSPAWN_TREE`, else `cache/bookworm-minbase` in
/// a target dir, made by `make deps-nspawn` with [`PACKAGES`].
pub fn tree() -> Result<PathBuf> {
    crate::cache::find(
        "bookworm-minbase",
        "KOLACH_NSPAWN_TREE",
        "run `make deps-nspawn` (debootstrap, about a minute)",
        is_complete,
    )
}

/// A tree whose stamp names this list of packages: made to the end, by the
/// Makefile of this source.
fn is_complete(tree: &Path) -> bool {
    let stamp = tree.with_extension("stamp");
    std::fs::read_to_string(stamp).is_ok_and(|s| s.trim() == format!("bookworm {PACKAGES}"))
        && tree.join("lib/systemd/systemd").is_file()
}
