//! kolach-dataplaned: applies route-table snapshots pushed by kolach-controld.
//! The udp backend forwards overlay packets between a TUN device and a UDP
//! socket itself; vxlan and host-gw program the kernel over rtnetlink, which
//! then forwards.
//!
//! Pure logic (no syscalls, unit-tested on bytes and values):
//! - [`packet`]: IPv4 header validation and TTL decrement with incremental checksum.
//! - [`icmp`]: ICMP net-unreachable / time-exceeded answers, and when not to answer.
//! - [`routes`]: the route table: destination → peer, sender → its subnets.
//! - [`forward`]: the udp backend's per-packet decisions built from those.
//! - [`snapshot`]: validating a received snapshot into typed values.
//! - [`ordering`]: whether a snapshot may replace the applied one.
//! - [`counters`]: packet and drop counters shared by the loop and Status.
//! - [`kobjects`]: the kernel objects kolach owns (routes, neighbours, FDB
//!   entries, links) as values.
//! - [`reconcile`]: wanted vs. actual kernel objects → the operations between
//!   them (reconcile, never flush).
//!
//! Around it:
//! - [`engine`]: the one apply path (Sync, Apply, restore) and the status it publishes.
//! - [`backend`]: the backend enum and its factory (udp, vxlan, host-gw; alloc is a no-op).
//! - [`udp`] / [`udp_loop`]: the udp backend and its two packet-loop threads.
//! - [`vxlan`] / [`hostgw`]: the kernel backends: what a snapshot asks of the kernel.
//! - [`sync`]: reads kolach's kernel objects, applies the reconcile plan, removes
//!   a previous backend's devices.
//! - [`tun`]: creating/attaching the persistent TUN device (own ioctls).
//! - [`netlink`]: the kernel seam (links, addresses, routes, neighbours, FDB) and
//!   rtnetlink behind it (`rtnl_link.rs`, `rtnl_objects.rs`).
//! - [`store`]: the last applied snapshot in `<run-dir>/snapshot.pb`.
//! - [`api`]: the gRPC service on `<run-dir>/dataplaned.sock`.
//! - [`cleanup`]: the `--cleanup` teardown.
//! - [`config`], [`observability`], [`signals`], [`caps`]: flags, logs, signals,
//!   start-up checks.

pub mod api;
pub mod backend;
pub mod caps;
pub mod cleanup;
pub mod config;
pub mod counters;
pub mod engine;
#[cfg(test)]
mod fake_kernel;
pub mod forward;
pub mod hostgw;
pub mod icmp;
pub mod kobjects;
pub mod netlink;
pub mod observability;
pub mod ordering;
pub mod packet;
pub mod reconcile;
pub mod routes;
mod rtnl_link;
mod rtnl_objects;
pub mod signals;
pub mod snapshot;
pub mod store;
pub mod sync;
pub mod tun;
pub mod udp;
pub mod udp_loop;
pub mod vxlan;

use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kolach_proto::uds::{self, PeerGate};
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;

pub use config::Config;
use engine::Engine;
use netlink::{Kernel, RtNetlink};

/// How long open RPCs get to finish after a stop signal. Sync streams end at
/// once and an Apply takes milliseconds; what waits out this grace is a client
/// that never answers the HTTP/2 GOAWAY (an idle connection of a stuck
/// process), and nothing needs flushing, so it is short.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Runs the daemon until `shutdown` resolves: restores the saved snapshot
/// (forwarding resumes without controld), then serves the API. Stopping ends
/// the packet loop and leaves every device, address and route in place.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    caps::preflight()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&cfg.run_dir)
        .with_context(|| format!("cannot create run dir {}", cfg.run_dir.display()))?;
    let kernel: Arc<dyn Kernel> = Arc::new(RtNetlink::connect()?);
    let engine = Arc::new(Engine::new(cfg.run_dir.clone(), cfg.tun.clone(), kernel));
    let socket = cfg.run_dir.join(kolach_proto::DATAPLANED_SOCKET);
    // Bind before restoring so a second instance fails here, before touching the
    // device; connections wait in the backlog until the restore is done.
    let listener = uds::bind(&socket).await?;
    engine.restore().await;

    let gate = PeerGate::for_user(Some(&cfg.controld_user));
    let (stop_tx, stop_rx) = watch::channel(false);
    let service = api::Service::new(engine.clone(), gate, stop_rx.clone());
    tracing::info!(
        socket = %socket.display(),
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        "serving"
    );
    let server = tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
    let mut stopping = stop_rx;
    tokio::select! {
        r = server => r.context("gRPC server failed")?,
        _ = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(STOP_GRACE).await;
        } => tracing::warn!("open RPCs did not finish in time; stopping anyway"),
    }
    engine.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped; devices and routes left in place");
    Ok(())
}

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
