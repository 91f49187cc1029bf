//! kolach-dataplaned: applies route-table snapshots pushed by kolach-controld.
//! The udp backend forwards overlay packets between a TUN device and a UDP
//! socket itself; vxlan and host-gw program the kernel over rtnetlink, which
//! then forwards.
//!
//! The packet path without I/O (IPv4 parsing, checksums, segmentation,
//! coalescing, ICMP answers, the route table, the per-packet verdicts) is its
//! own crate, `kolach-packet` (`dataplaned/packet/`).
//!
//! The folders, each depending only on those listed before it:
//! - [`snapshot`] (pure): validating a received snapshot into typed values;
//!   [`snapshot::ordering`]: whether a snapshot may replace the applied one.
//! - [`kernel`]: the kernel seam (the `Kernel` trait: links, addresses,
//!   routes, neighbours, FDB) and rtnetlink behind it (`kernel/rtnl/`);
//!   [`kernel::kobjects`]: the kernel objects kolach owns, as values;
//!   [`kernel::reconcile`] (pure): wanted vs. actual → the operations between
//!   them (reconcile, never flush); [`kernel::sync`]: reads kolach's objects,
//!   applies the plan, removes a previous backend's devices;
//!   [`kernel::export`]: this host's subnet and blocks in the export table
//!   (`dev lo`, every backend), its plan pure; a fake kernel
//!   that records calls for the tests (`kernel/fake.rs`).
//! - [`datapath`]: the udp backend's packet loop and what it runs over:
//!   `udp_loop` (a thread per queue), `tx` (TUN → UDP: segmentation, GSO
//!   sends) and `rx` (UDP → TUN: GRO receives, coalescing), `mmsg` (the batch
//!   syscalls), `socket`, `tun` (creating/attaching the persistent TUN device,
//!   own ioctls), `offload`, `busy_poll`, `steer` and `flow_steer` (a TUN
//!   queue, socket and thread per CPU; the TUN's steering program, built with
//!   `ebpf`), `counters` (packet and drop counters shared by the loop and
//!   Status).
//! - [`handover`]: restarts and hot upgrades (DESIGN §6): `upgrade` (checking
//!   the binary on disk and re-executing it with the fds), `handoff` (pure: the
//!   check line and the state carried across `execve`), `inherit` (what a
//!   starting image takes over), `listen_fds`, `notify` (sd_notify and the fd
//!   store), `binary` (which executable runs, and whether its file was
//!   replaced).
//! - [`backend`]: the backend enum and its factory (alloc is a no-op), with
//!   what the backends share (`Outcome`); `backend/udp/` (the udp backend:
//!   the device, the sockets and the loop; `fds.rs`: where its fds come
//!   from), `vxlan.rs` and `hostgw.rs` (the kernel backends: what a snapshot
//!   asks of the kernel).
//! - [`firewall`]: the host firewall as the snapshot asks for it: ip-masq
//!   (nftables table `ip kolach`, [`firewall::masq`]) and the FORWARD
//!   accepts ([`firewall::forward`], with the `iptables` binary); plans pure,
//!   the tools behind the `Runner` seam.
//! - [`engine`]: the one apply path (Sync, Apply, restore) and the status it
//!   publishes; [`engine::store`]: the last applied snapshot in
//!   `<run-dir>/snapshot.pb`; [`engine::histogram`]: how long applies take.
//! - [`daemon`]: the daemon's life: take over, restore, serve, hand over;
//!   [`daemon::api`]: the gRPC services on `<run-dir>/dataplaned.sock`;
//!   [`daemon::cleanup`]: the `--cleanup` teardown; `observability`,
//!   `signals`, `caps`: logs, signals, start-up checks.
//! - [`config`]: the flags.

pub mod backend;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod engine;
pub mod firewall;
pub mod handover;
pub mod kernel;
pub mod snapshot;

pub use config::Config;
pub use daemon::run;
use kernel::{Kernel, RtNetlink};

/// `--cleanup`: removes proto-107 routes, `kolach.*` vxlan devices, the TUN
/// device, table `ip kolach`, the tagged FORWARD rules and the saved
/// snapshot.
pub async fn cleanup(cfg: &Config) -> anyhow::Result<()> {
    let kernel = RtNetlink::connect();
    let k: Result<&dyn Kernel, String> = match &kernel {
        Ok(k) => Ok(k),
        Err(e) => Err(e.to_string()),
    };
    daemon::cleanup::cleanup(k, &firewall::System, &cfg.tun, &cfg.run_dir).await?;
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
