//! kolach-dataplaned: applies route-table snapshots pushed by kolach-controld.
//! The udp backend forwards overlay packets between a TUN device and a UDP
//! socket itself; vxlan and host-gw program the kernel over rtnetlink, which
//! then forwards.
//!
//! The packet path without I/O (IPv4 parsing, checksums, segmentation,
//! coalescing, ICMP answers, the route table, the per-packet verdicts) is its
//! own crate, `kolach-packet` (`dataplaned/packet/`).
//!
//! Pure logic (no syscalls, unit-tested on bytes and values):
//! - [`snapshot`]: validating a received snapshot into typed values.
//! - [`ordering`]: whether a snapshot may replace the applied one.
//! - [`counters`]: packet and drop counters shared by the loop and Status.
//! - [`kobjects`]: the kernel objects kolach owns (routes, neighbours, FDB
//!   entries, links) as values.
//! - [`reconcile`]: wanted vs. actual kernel objects → the operations between
//!   them (reconcile, never flush).
//!
//! Around it:
//! - [`daemon`]: the daemon's life: take over, restore, serve, hand over.
//! - [`engine`]: the one apply path (Sync, Apply, restore) and the status it publishes.
//! - [`backend`]: the backend enum and its factory (udp, vxlan, host-gw; alloc is a no-op).
//! - [`udp`] / [`udp_loop`]: the udp backend and its packet-loop threads,
//!   [`tx`] (TUN → UDP: segmentation, GSO sends planned by kolach-packet's `gso_plan`) and
//!   [`rx`] (UDP → TUN: GRO receives, coalescing); [`offload`]: which kernel offloads run;
//!   [`busy_poll`]: `--busy-poll`, polling instead of sleeping while traffic flows;
//!   [`mmsg`]: the batch syscalls; [`steer`]: a TUN queue, socket and thread per CPU,
//!   [`flow_steer`]: the TUN's steering program (built with [`ebpf`]).
//! - [`vxlan`] / [`hostgw`]: the kernel backends: what a snapshot asks of the kernel.
//! - [`sync`]: reads kolach's kernel objects, applies the reconcile plan, removes
//!   a previous backend's devices.
//! - [`tun`]: creating/attaching the persistent TUN device (own ioctls).
//! - [`netlink`]: the kernel seam (links, addresses, routes, neighbours, FDB) and
//!   rtnetlink behind it (`rtnl_link.rs`, `rtnl_objects.rs`).
//! - [`store`]: the last applied snapshot in `<run-dir>/snapshot.pb`.
//! - [`api`]: the gRPC services on `<run-dir>/dataplaned.sock`.
//! - [`cleanup`]: the `--cleanup` teardown.
//! - [`config`], [`observability`], [`signals`], [`caps`]: flags, logs, signals,
//!   start-up checks.
//!
//! Restarts and hot upgrades (DESIGN §6):
//! - [`upgrade`]: checking the binary on disk and re-executing it with the fds.
//! - [`handoff`] (pure): the check line and the state carried across `execve`.
//! - [`inherit`]: what a starting image takes over (handover, systemd's fd store).
//! - [`listen_fds`]: `LISTEN_FDS` parsing; [`notify`]: sd_notify and the fd store.
//! - [`binary`]: which executable runs, and whether its file was replaced.

pub mod api;
pub mod backend;
pub mod binary;
pub mod busy_poll;
pub mod caps;
pub mod cleanup;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod ebpf;
pub mod engine;
#[cfg(test)]
mod fake_kernel;
pub mod flow_steer;
pub mod handoff;
pub mod hostgw;
pub mod inherit;
pub mod kobjects;
pub mod listen_fds;
pub mod mmsg;
pub mod netlink;
pub mod notify;
pub mod observability;
pub mod offload;
pub mod ordering;
pub mod reconcile;
mod rtnl_link;
mod rtnl_objects;
pub mod rx;
pub mod signals;
pub mod snapshot;
pub mod steer;
pub mod store;
pub mod sync;
pub mod tun;
pub mod tx;
pub mod udp;
pub mod udp_loop;
pub mod upgrade;
pub mod vxlan;

pub use config::Config;
pub use daemon::run;
use netlink::{Kernel, RtNetlink};

/// `--cleanup`: removes proto-107 routes, `kolach.*` vxlan devices, the TUN
/// device and the saved snapshot.
pub async fn cleanup(cfg: &Config) -> anyhow::Result<()> {
    let kernel = RtNetlink::connect();
    let k: Result<&dyn Kernel, String> = match &kernel {
        Ok(k) => Ok(k),
        Err(e) => Err(e.to_string()),
    };
    cleanup::cleanup(k, &cfg.tun, &cfg.run_dir).await?;
    Ok(())
}

/// A sentence for errors a person can fix, if we recognise one.
pub fn hint(e: &anyhow::Error) -> Option<&'static str> {
    let text = format!("{e:#}");
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        Some("kolach-dataplaned needs CAP_NET_ADMIN: run it as root or with AmbientCapabilities=CAP_NET_ADMIN")
    } else if text.contains("already serves") {
        Some("another kolach-dataplaned is running with this --run-dir")
    } else {
        None
    }
}
