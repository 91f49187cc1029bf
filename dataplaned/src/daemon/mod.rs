//! The daemon's life: take over what a previous image or systemd handed
//! down, restore the saved snapshot, serve; on a hot upgrade stop serving
//! (the listening socket stays open), pause the packet loop and re-execute
//! the binary, or serve on if that fails.

use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use kolach_proto::uds::{self, PeerGate};
use tokio::sync::watch;

use crate::config::Config;
use crate::engine::Engine;
use crate::handover::binary::BinaryId;
use crate::handover::handoff::Handoff;
use crate::handover::inherit::Start;
use crate::handover::monotonic_us;
use crate::handover::notify;
use crate::handover::upgrade::{Plan, Upgrader};
use crate::kernel::{Kernel, RtNetlink};

pub mod api;
pub mod caps;
pub mod cleanup;
pub mod observability;
pub mod signals;

/// How long open RPCs get to finish after a stop signal. Sync streams end at
/// once and an Apply takes milliseconds; what waits out this grace is a client
/// that never answers the HTTP/2 GOAWAY (an idle connection of a stuck
/// process), and nothing needs flushing, so it is short.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// The same before a handover. Packets keep flowing meanwhile, but the
/// upgrade waits, and a client still connected is cut off by the exec anyway.
const HANDOVER_GRACE: Duration = Duration::from_millis(500);

enum Next {
    Stop,
    Upgrade(Plan),
}

/// Runs the daemon until `shutdown` resolves: adopts what `start` hands
/// down, restores the saved snapshot (forwarding resumes without controld),
/// then serves the API. Stopping ends the packet loop and leaves every
/// device, address and route in place.
pub async fn run(
    cfg: Config,
    start: Start,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    caps::preflight()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&cfg.run_dir)
        .with_context(|| format!("cannot create run dir {}", cfg.run_dir.display()))?;
    let binary = BinaryId::running().context("cannot identify the running executable")?;
    let Start {
        source,
        carried,
        fds,
        listener,
    } = start;
    let (upgrader, mut plans) = Upgrader::new(binary, &carried);
    let upgrader = Arc::new(upgrader);
    tokio::spawn(signals::hangups(upgrader.clone()));

    let kernel: Arc<dyn Kernel> = Arc::new(RtNetlink::connect()?);
    let engine = Arc::new(
        Engine::new(
            cfg.run_dir.clone(),
            cfg.tun.clone(),
            kernel,
            Arc::new(crate::firewall::System),
        )
        .with_udp(cfg.udp_options())
        .resuming(&carried, fds),
    );
    let socket = cfg.socket();
    // Bind before restoring so a second instance fails here, before touching the
    // device; connections wait in the backlog until the restore is done.
    let listener: OwnedFd = match listener {
        Some(l) => l.into(),
        None => uds::bind(&socket).await?.into_std()?.into(),
    };
    engine.restore().await;
    let recheck = tokio::spawn(recheck_firewall(engine.clone()));
    if let Some(at) = carried.paused_at_us {
        let pause = monotonic_us().saturating_sub(at);
        upgrader.set_pause(pause);
        tracing::info!(
            upgrades = carried.upgrades,
            pause_ms = pause as f64 / 1000.0,
            "took over from the previous image (same PID); packet loop paused this long"
        );
    }

    let gate = PeerGate::for_user(Some(&cfg.controld_user));
    let limits = uds::Limits::default();
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::info!(
        socket = %socket.display(),
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        binary = %upgrader.binary().path.display(),
        upgrades = carried.upgrades,
        start = source.as_str(),
        "serving"
    );
    notify::ready(&serving_status(&engine));
    loop {
        let (stop_tx, stop_rx) = watch::channel(false);
        let service = api::Service::new(
            engine.clone(),
            upgrader.clone(),
            gate.clone(),
            stop_rx.clone(),
        );
        // The server gets a copy of the listener; ours stays open for the handover.
        let copy = std::os::unix::net::UnixListener::from(listener.try_clone()?);
        let incoming = tokio::net::UnixListener::from_std(copy)?;
        let mut server_stop = stop_rx;
        // Limits on connections, idle clients and message sizes; privileged
        // methods refused for other uids before their body is read.
        let server = uds::server_builder(&limits)
            .layer(uds::GateLayer::new(gate.clone(), uds::DATAPLANE_PRIVILEGED))
            .add_service(service.clone().into_server())
            .add_service(service.into_admin_server())
            .serve_with_incoming_shutdown(
                uds::Incoming::new(incoming, limits, gate.clone()),
                async move {
                    let _ = server_stop.wait_for(|s| *s).await;
                },
            );
        tokio::pin!(server);
        let next = tokio::select! {
            r = &mut server => {
                r.context("gRPC server failed")?;
                Next::Stop
            }
            _ = &mut shutdown => Next::Stop,
            Some(plan) = plans.recv() => Next::Upgrade(plan),
        };
        let _ = stop_tx.send(true);
        let grace = match next {
            Next::Stop => STOP_GRACE,
            Next::Upgrade(_) => HANDOVER_GRACE,
        };
        if tokio::time::timeout(grace, &mut server).await.is_err() {
            tracing::warn!(grace = ?grace, "open RPCs did not finish in time; going on");
        }
        match next {
            Next::Stop => break,
            Next::Upgrade(plan) => {
                let err = hand_over(&engine, &upgrader, &listener, &plan).await;
                upgrader.failed(format!(
                    "cannot execute {}: {err}",
                    plan.binary.path.display()
                ));
                notify::ready(&serving_status(&engine));
            }
        }
    }
    recheck.abort();
    engine.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped; devices and routes left in place");
    Ok(())
}

/// Pauses forwarding and re-executes the binary on disk with the fds kept
/// open. Returns only when that failed (forwarding has resumed then).
async fn hand_over(
    engine: &Engine,
    upgrader: &Upgrader,
    listener: &OwnedFd,
    plan: &Plan,
) -> std::io::Error {
    notify::reloading(&format!("hot upgrade to {}", plan.new_version));
    let started_unix_ms = engine
        .started()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let upgrades = engine.upgrades();
    // An image from before queues (format 1) adopts one TUN queue and socket.
    let max_queues = if plan.format >= 2 { usize::MAX } else { 1 };
    engine
        .hand_over(max_queues, |fds, counters, paused_at_us| {
            let (tun, udp) = fds.unwrap_or_default();
            let h = Handoff {
                listener: listener.as_raw_fd(),
                format: plan.format,
                tun,
                udp,
                upgrades,
                started_unix_ms,
                paused_at_us,
                counters,
            };
            tracing::info!(
                binary = %plan.binary.path.display(),
                new_version = %plan.new_version,
                handoff = %h.encode(),
                "packet loop paused; executing the new binary"
            );
            upgrader.exec(&h)
        })
        .await
}

/// Every [`crate::firewall::RECHECK`], the host firewall is checked against
/// the applied snapshot (a listing each, a change only when it differs).
async fn recheck_firewall(engine: Arc<Engine>) {
    let mut tick = tokio::time::interval(crate::firewall::RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        engine.recheck_firewall().await;
    }
}

fn serving_status(engine: &Engine) -> String {
    match engine.applied() {
        Some(a) => format!(
            "serving; generation {}, {} routes",
            a.snapshot.version.generation, a.route_count
        ),
        None => "serving; waiting for controld".to_string(),
    }
}
