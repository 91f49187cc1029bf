//! kolach-controld: leases this host's subnet from etcd, watches everyone
//! else's, and pushes full route-table snapshots to kolach-dataplaned.
//!
//! The folders are the parts:
//! - [`model`]: the pure part, tested in memory: config, subnet keys, lease
//!   values, VTEP MACs, peers, the lease table, recovery after a (re)start or
//!   a loss, snapshots, subnet.env.
//! - [`etcd`]: all etcd I/O: [`etcd::Registry`] (every call; every subnet
//!   write is a txn), endpoint failover, the subnet and config watches, the
//!   lease keepalive, and the checks on how etcd is reached.
//! - [`state`]: the single state task that owns the model: how it gets and
//!   keeps its subnet, loses it, and what it sends out (snapshots,
//!   subnet.env, READY=1, the status view).
//! - [`api`]: `kolach.control.v1.Control` on `<run-dir>/controld.sock`,
//!   serving the view the state task publishes, and `kolach.ipam.v1.Ipam`
//!   (root only) in front of the IPAM task.
//! - [`ipam`]: pod addresses (DESIGN §10): the task that owns this host's
//!   allocations, the pools and every host's blocks.
//! - [`aws`]: the aws-vpc backend (DESIGN §11): the task that keeps this
//!   host's subnet routed in the VPC's route tables; the state task tells it
//!   what to keep, the control API shows how it stands.
//! - [`metrics`]: `--metrics-addr`: `/metrics` (Prometheus text) and
//!   `/healthz`, from the same view the control API serves.
//!
//! Beside them:
//! - [`dataplane`]: the `Dataplane.Sync` stream client, with reconnect.
//! - [`underlay`]: interface, address and MTU. sd_notify and the stop
//!   signals are kolach-proto's (`systemd`, `signals`), shared with the dataplane.
//! - [`flags`]: the command line; [`flannel`]: flannel's command line and
//!   `FLANNELD_` variables onto it; [`event`]: messages between tasks and
//!   shutdown; [`backoff`]: retry delays.
//! - [`run`] (here): wires the tasks together.

// One unsafe call in the crate: the SIOCGIFMTU ioctl in `underlay` (nix's
// ioctl wrappers are unsafe fns), allowed there and nowhere else.
#![deny(unsafe_code)]

pub mod api;
pub mod aws;
pub mod backoff;
pub mod dataplane;
pub mod etcd;
pub mod event;
pub mod flags;
pub mod flannel;
pub mod ipam;
pub mod metrics;
pub mod model;
pub mod state;
pub mod underlay;

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use kolach_proto::control::control_server::ControlServer;
use kolach_proto::ipam::ipam_server::IpamServer;
use kolach_proto::{uds, CONTROLD_SOCKET, DATAPLANED_SOCKET};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

pub use flags::Flags;

use crate::api::view::View;
use crate::backoff::Backoff;
use crate::etcd::{ipam_watch, security, watcher, EtcdOptions, Registry};
use crate::event::{sleep_or_stop, Shutdown};
use crate::state::{Controller, Outputs, Settings};

/// The control API's requests are empty messages; the largest IPAM request
/// is a GC's list of live attachments (about 100 bytes each).
const CONTROL_MAX_MESSAGE: usize = 1024 * 1024;

/// How long open control API connections get after a stop signal.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the daemon until `shutdown` resolves. Returns an error only for
/// problems retrying cannot fix (no underlay interface, socket in use, bad
/// TLS files); an unreachable etcd or dataplane is waited for.
pub async fn run(flags: Flags, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let underlay = underlay::detect(flags.iface.as_deref(), flags.public_ip)
        .context("cannot find the underlay interface")?;
    info!(iface = %underlay.iface, address = %underlay.iface_addr, public_ip = %underlay.public_ip,
        mtu = underlay.mtu, "underlay");

    std::fs::create_dir_all(&flags.run_dir)
        .with_context(|| format!("cannot create run dir {}", flags.run_dir.display()))?;
    let sock_path = flags.run_dir.join(CONTROLD_SOCKET);
    let listener = uds::bind(&sock_path).await?;
    let metrics_listener = match flags.metrics_addr {
        Some(a) => Some(metrics::serve::bind(a).await?),
        None => None,
    };

    let (stop_tx, stop) = Shutdown::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (view_tx, view_rx) = watch::channel(Arc::new(View {
        phase: "waiting-for-etcd",
        public_ip: Some(underlay.public_ip),
        iface: underlay.iface.clone(),
        ..View::default()
    }));
    let registry_cell: Arc<OnceLock<Registry>> = Arc::new(OnceLock::new());
    // Spawned once whatever the backend: it idles while told `None`, and a
    // live switch to aws-vpc needs no new task.
    let (aws_desired_tx, aws_desired_rx) = watch::channel(None);
    let (aws_status_tx, aws_status_rx) = watch::channel(aws::AwsStatus::default());
    let aws_task = tokio::spawn(aws::run(
        aws::Settings::from_env(),
        aws_desired_rx,
        aws_status_tx,
        stop.clone(),
    ));
    let api = api::ControlApi {
        statics: api::Static {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            start_time_unix: now.as_secs() as i64,
            etcd_endpoints: flags.etcd_endpoints.clone(),
            subnet_file: flags.subnet_file.clone(),
        },
        view: view_rx.clone(),
        registry: registry_cell.clone(),
        aws: aws_status_rx,
    };
    let view_rx_for_ipam = view_rx;
    let (tx, rx) = mpsc::unbounded_channel();
    let (ipam, ipam_watch, ipam_task) = ipam::spawn(
        registry_cell.clone(),
        ipam::IpamSettings {
            state_dir: flags.state_dir.clone(),
            block_grace: flags.block_grace,
        },
        view_rx_for_ipam,
        tx.clone(),
        stop.clone(),
    );
    let metrics_task = metrics_listener.map(|l| {
        let sources = metrics::Sources {
            view: api.view.clone(),
            ipam: ipam.clone(),
            dataplane_socket: flags.run_dir.join(DATAPLANED_SOCKET),
        };
        tokio::spawn(metrics::serve::run(l, sources, stop.clone()))
    });
    let mut api_stop = stop.clone();
    // Control is read-only; every Ipam method is root's only.
    let limits = uds::Limits {
        max_message_bytes: CONTROL_MAX_MESSAGE,
        ..uds::Limits::default()
    };
    let gate = uds::PeerGate::new(None);
    let incoming = uds::Incoming::new(listener, limits, gate.clone());
    let server = tokio::spawn(
        uds::server_builder(&limits)
            .layer(uds::GateLayer::new(gate, uds::IPAM_PRIVILEGED))
            .add_service(
                ControlServer::new(api).max_decoding_message_size(limits.max_message_bytes),
            )
            .add_service(
                IpamServer::new(api::ipam::IpamApi { ipam })
                    .max_decoding_message_size(limits.max_message_bytes),
            )
            .serve_with_incoming_shutdown(incoming, async move { api_stop.wait().await }),
    );
    info!(socket = %sock_path.display(), "serving the control API");

    let result = tokio::select! {
        r = run_core(&flags, underlay, now.as_nanos() as u64, stop.clone(), Wiring {
            view_tx,
            registry_cell,
            events: (tx, rx),
            ipam_watch,
            aws_desired: aws_desired_tx,
        }) => r,
        _ = shutdown => Ok(()),
    };
    info!("shutting down (the lease stays; the dataplane keeps its routes)");
    let _ = stop_tx.send(true);
    // The server waits for its clients to hang up after GOAWAY; one that never
    // does (a stuck kolachctl) must not keep the daemon from stopping.
    match tokio::time::timeout(STOP_GRACE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "control API failed"),
        Ok(Err(e)) => warn!(error = %e, "control API task failed"),
        Err(_) => warn!(
            grace_ms = STOP_GRACE.as_millis() as u64,
            "control API clients still connected; stopping anyway"
        ),
    }
    let _ = ipam_task.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    // The AWS task may be inside a slow HTTP call; it keeps no state that a
    // stop could tear, so it gets the same grace and no more.
    if tokio::time::timeout(STOP_GRACE, aws_task).await.is_err() {
        warn!("aws-vpc task still busy; stopping anyway");
    }
    let _ = std::fs::remove_file(&sock_path);
    result
}

/// The channels [`run`] made before etcd was reached, for [`run_core`].
struct Wiring {
    view_tx: watch::Sender<Arc<View>>,
    registry_cell: Arc<OnceLock<Registry>>,
    events: (event::EventTx, mpsc::UnboundedReceiver<event::Event>),
    ipam_watch: etcd::ipam_watch::WatchedTx,
    aws_desired: watch::Sender<Option<aws::Desired>>,
}

/// Connects to etcd and runs the tasks; returns only on a fatal error or
/// when `stop` is signalled.
async fn run_core(
    flags: &Flags,
    underlay: underlay::Underlay,
    epoch: u64,
    mut stop: Shutdown,
    wiring: Wiring,
) -> anyhow::Result<()> {
    let Wiring {
        view_tx,
        registry_cell,
        events: (tx, rx),
        ipam_watch,
        aws_desired,
    } = wiring;
    let opts = EtcdOptions {
        endpoints: flags.etcd_endpoints.clone(),
        prefix: flags.etcd_prefix.clone(),
        cafile: flags.etcd_cafile.clone(),
        certfile: flags.etcd_certfile.clone(),
        keyfile: flags.etcd_keyfile.clone(),
        username: flags.etcd_username.clone(),
        password: flags.etcd_password.clone(),
    };
    let standing_warnings = security::plaintext_warnings(&flags.etcd_endpoints);
    for w in &standing_warnings {
        warn!("{w}");
    }
    let mut backoff = Backoff::etcd();
    let reg = loop {
        match Registry::connect(&opts).await {
            Ok(r) => break r,
            Err(e) if e.is_transient() => {
                warn!(error = %e, "cannot connect to etcd; retrying");
                if !sleep_or_stop(backoff.next_delay(), &mut stop).await {
                    return Ok(());
                }
            }
            Err(e) => return Err(e).context("cannot set up the etcd client"),
        }
    };
    let _ = registry_cell.set(reg.clone());

    let (snap_tx, snap_rx) = watch::channel(None);
    let settings = Settings {
        lease_ttl: flags.subnet_lease_ttl,
        subnet_file: flags.subnet_file.clone(),
        flannel_subnet_file: flags.flannel_subnet_file.clone(),
        expect_udp_port: flags.expect_udp_port,
        config_key: reg.config_key(),
        epoch,
        standing_warnings,
        ip_masq: flags.ip_masq,
        forward_rules: flags.iptables_forward_rules,
    };
    let tasks = vec![
        tokio::spawn(watcher::config(reg.clone(), tx.clone(), stop.clone())),
        tokio::spawn(watcher::subnets(reg.clone(), tx.clone(), stop.clone())),
        tokio::spawn(ipam_watch::run(
            ipam_watch::Kind::Pools,
            reg.clone(),
            ipam_watch.clone(),
            tx.clone(),
            stop.clone(),
        )),
        tokio::spawn(ipam_watch::run(
            ipam_watch::Kind::Blocks,
            reg.clone(),
            ipam_watch,
            tx.clone(),
            stop.clone(),
        )),
        tokio::spawn(dataplane::sync(
            flags.run_dir.join(DATAPLANED_SOCKET),
            snap_rx,
            tx.clone(),
            stop.clone(),
        )),
    ];
    let controller = Controller::new(
        reg,
        settings,
        underlay,
        tx,
        stop.clone(),
        Outputs {
            snapshots: snap_tx,
            view: view_tx,
            aws_desired,
        },
    );
    controller.run(rx).await;
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}
