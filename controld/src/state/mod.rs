//! The state task: owns the model (config, lease table, this host's lease,
//! snapshot versions, dataplane progress) and reacts to the events the other
//! tasks send. Pure modules decide; this loop does the I/O they ask for.
//!
//! [`Controller`]'s fields are private to this folder; its children add the
//! rest of its methods:
//! - `claim`: getting and keeping this host's subnet (etcd writes).
//! - `loss`: noticing a lost lease, and the reclaim or move after it.
//! - `push`: what leaves the task: snapshots, subnet.env, READY=1, the view.
//! - `watched`: applying what the etcd watches saw (config, subnets).

mod claim;
mod loss;
mod push;
mod watched;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use kolach_proto::dataplane::Snapshot;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::api::view::View;
use crate::aws;
use crate::backoff::Backoff;
use crate::etcd::keeper;
use crate::etcd::Registry;
use crate::event::{Event, EventTx, Shutdown};
use crate::ipam::block::BlockSet;
use crate::model::config::NetConfig;
use crate::model::lease::{Lease, LeaseAttrs};
use crate::model::loss::Loss;
use crate::model::noted::Noted;
use crate::model::peers::SkipReport;
use crate::model::snapshot::Versioner;
use crate::model::subnet_env::SubnetEnv;
use crate::model::table::LeaseTable;
use crate::underlay::{self, Underlay};

/// How many recent warnings the status keeps.
const WARNINGS_KEPT: usize = 20;

/// Static settings the state task needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub lease_ttl: Duration,
    pub subnet_file: PathBuf,
    /// flannel's subnet.env, written beside ours (--flannel-subnet-file).
    pub flannel_subnet_file: Option<PathBuf>,
    /// A flannel `-port`, checked against each config applied.
    pub expect_udp_port: Option<u16>,
    pub config_key: String,
    pub epoch: u64,
    /// Shown in every status until the daemon stops (plaintext etcd
    /// endpoints that are not loopback).
    pub standing_warnings: Vec<String>,
    /// `--ip-masq` and `--iptables-forward-rules`, carried in every
    /// snapshot for the dataplane to keep; ip_masq also gives
    /// KOLACH_IPMASQ / FLANNEL_IPMASQ in the subnet files.
    pub ip_masq: bool,
    pub forward_rules: bool,
}

/// Where the state task's results go.
pub struct Outputs {
    /// To the dataplane sync task.
    pub snapshots: watch::Sender<Option<Snapshot>>,
    /// To the control API.
    pub view: watch::Sender<Arc<View>>,
    /// To the aws-vpc task.
    pub aws_desired: watch::Sender<Option<aws::Desired>>,
}

pub struct Controller {
    reg: Registry,
    settings: Settings,
    underlay: Underlay,
    tx: EventTx,
    shutdown: Shutdown,
    rng: StdRng,

    cfg: Option<NetConfig>,
    config_raw: Option<Option<Vec<u8>>>,
    config_error: Option<String>,
    table: LeaseTable,
    listed: bool,
    /// Every host's pool blocks, once the IPAM task has listed them (no
    /// snapshot before: it would drop the routes to them).
    blocks: Option<Arc<BlockSet>>,
    /// This host's lease or reservation, once held.
    mine: Option<Lease>,
    /// The subnet held before (subnet.env, or the lease just lost).
    previous: Option<Ipv4Net>,
    keeper: Option<(i64, JoinHandle<()>)>,
    keepalive: Option<(i64, std::time::Instant)>,
    /// When etcd expires our lease at the earliest, if no keepalive answers
    /// before (see [`crate::model::loss`]).
    lease_deadline: Option<Instant>,
    /// The subnet lost most recently, until one is held again.
    loss: Option<Loss>,
    /// A granted etcd lease not yet attached to a key (after a lost race).
    spare_lease: Option<i64>,
    /// When to try claiming again after a failure; None = now.
    retry_at: Option<Instant>,
    retry_backoff: Backoff,

    versioner: Versioner,
    snapshots: watch::Sender<Option<Snapshot>>,
    peer_count: u32,
    /// Peer leases not routed (another backend, no VtepMAC), each logged once.
    skipped: SkipReport,
    /// Blocks not routed (in the Network, overlapping an older one), each
    /// logged once.
    unroutable: Noted<Ipv4Net, String>,
    /// subnet.env content of each snapshot generation not yet acknowledged.
    pending_env: BTreeMap<u64, SubnetEnv>,
    acked_env: Option<SubnetEnv>,
    written_env: Option<SubnetEnv>,
    /// What flannel's subnet.env (--flannel-subnet-file) last got.
    flannel_written: Option<SubnetEnv>,
    ready_sent: bool,
    dp_connected: bool,
    applied_generation: u64,
    /// Snapshots the dataplane applied (or had applied already), and those
    /// it refused.
    snapshots_pushed: u64,
    snapshot_push_errors: u64,

    etcd_reachable: bool,
    etcd_error: Option<String>,
    /// Failed etcd requests the other tasks reported (each `EtcdDown`).
    etcd_errors: u64,
    warnings: VecDeque<String>,
    standing_warnings: Vec<String>,
    view: watch::Sender<Arc<View>>,
    /// What the aws-vpc task should keep (see `push::aws_desired`).
    aws_desired: watch::Sender<Option<aws::Desired>>,
}

impl Controller {
    pub fn new(
        reg: Registry,
        settings: Settings,
        underlay: Underlay,
        tx: EventTx,
        shutdown: Shutdown,
        outputs: Outputs,
    ) -> Self {
        let Outputs {
            snapshots,
            view,
            aws_desired,
        } = outputs;
        let standing_warnings = settings.standing_warnings.clone();
        // Ours first; a host switched from flannel has only flannel's.
        let previous = std::iter::once(&settings.subnet_file)
            .chain(settings.flannel_subnet_file.as_ref())
            .find_map(|f| crate::model::subnet_env::read_previous(f).map(|p| (p, f)));
        if let Some((p, file)) = &previous {
            info!(subnet = %p, file = %file.display(), "previous subnet from subnet.env");
        }
        let previous = previous.map(|(p, _)| p);
        Controller {
            reg,
            versioner: Versioner::new(settings.epoch),
            settings,
            underlay,
            tx,
            shutdown,
            rng: StdRng::from_os_rng(),
            cfg: None,
            config_raw: None,
            config_error: None,
            table: LeaseTable::new(),
            listed: false,
            blocks: None,
            mine: None,
            previous,
            keeper: None,
            keepalive: None,
            lease_deadline: None,
            loss: None,
            spare_lease: None,
            retry_at: None,
            retry_backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
            snapshots,
            peer_count: 0,
            skipped: SkipReport::default(),
            unroutable: Noted::default(),
            pending_env: BTreeMap::new(),
            acked_env: None,
            written_env: None,
            flannel_written: None,
            ready_sent: false,
            dp_connected: false,
            applied_generation: 0,
            snapshots_pushed: 0,
            snapshot_push_errors: 0,
            etcd_reachable: false,
            etcd_error: None,
            etcd_errors: 0,
            warnings: VecDeque::new(),
            standing_warnings,
            view,
            aws_desired,
        }
    }

    /// The loop: apply an event, reconcile, publish; until shutdown.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        let mut shutdown = self.shutdown.clone();
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.reconcile() => {}
                _ = shutdown.wait() => break,
            }
            self.publish();
            let retry = self.retry_at;
            let deadline = self.lease_deadline;
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => break,
                },
                _ = sleep_until_opt(retry) => self.retry_at = None,
                _ = sleep_until_opt(deadline) => self.lease_expired(),
                _ = tick.tick() => self.periodic(),
                _ = shutdown.wait() => break,
            }
            // Take everything already queued before reconciling again.
            while let Ok(ev) = rx.try_recv() {
                self.handle(ev);
            }
            // Before reconciling, which may wait on etcd for seconds: a lost
            // lease must leave the status at once.
            self.publish();
        }
        if let Some((_, h)) = self.keeper.take() {
            h.abort();
        }
        debug!("state task stopped");
    }

    /// The value this host's key should hold under `cfg`.
    fn my_attrs(&self, cfg: &NetConfig) -> LeaseAttrs {
        LeaseAttrs::ours(cfg.backend.kind, self.underlay.public_ip)
    }

    fn warn_event(&mut self, msg: String) {
        if self.warnings.len() == WARNINGS_KEPT {
            self.warnings.pop_front();
        }
        self.warnings.push_back(msg);
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::EtcdUp => {
                if !self.etcd_reachable && self.etcd_error.is_some() {
                    info!(endpoints = %self.reg.endpoints(), "etcd reachable again");
                    // A claim that failed while etcd was away need not wait
                    // out its backoff (up to 10 s) now.
                    if self.mine.is_none() {
                        self.retry_at = None;
                        self.retry_backoff.reset();
                    }
                }
                self.etcd_reachable = true;
                self.etcd_error = None;
            }
            Event::EtcdDown(msg) => self.etcd_down(msg),
            Event::Config(raw) => self.on_config(raw),
            Event::Listed(l) => self.on_listed(l),
            Event::Subnet(e) => self.on_subnet(e),
            Event::KeepAlive {
                lease_id,
                ttl,
                sent,
            } => self.kept_alive(lease_id, ttl, sent),
            Event::LeaseLost { lease_id, reason } => {
                if let Some(m) = self.mine.clone().filter(|m| m.lease_id == lease_id) {
                    self.lost(&m, &reason);
                }
            }
            Event::Dataplane(d) => self.on_dataplane(d),
            Event::Blocks(b) => self.blocks = Some(b),
        }
    }

    fn etcd_down(&mut self, msg: String) {
        if self.etcd_reachable || self.etcd_error.is_none() {
            warn!(error = %msg, "etcd unreachable; retrying (the dataplane keeps its routes)");
        } else {
            debug!(error = %msg, "etcd still unreachable");
        }
        self.etcd_reachable = false;
        self.etcd_error = Some(msg);
        self.etcd_errors += 1;
    }

    fn periodic(&mut self) {
        match underlay::current_mtu(&self.underlay.iface) {
            Ok(mtu) if mtu != self.underlay.mtu => {
                info!(iface = %self.underlay.iface, old = self.underlay.mtu, new = mtu, "underlay MTU changed");
                self.underlay.mtu = mtu;
            }
            Ok(_) => {}
            Err(e) => debug!(error = %e, "cannot re-read the underlay MTU"),
        }
        self.write_subnet_env();
    }

    fn start_keeper(&mut self, lease_id: i64) {
        if lease_id == 0 || self.keeper.as_ref().is_some_and(|(id, _)| *id == lease_id) {
            return;
        }
        self.stop_keeper();
        let h = tokio::spawn(keeper::keep(
            self.reg.clone(),
            lease_id,
            self.tx.clone(),
            self.shutdown.clone(),
        ));
        self.keeper = Some((lease_id, h));
    }

    fn stop_keeper(&mut self) {
        if let Some((_, h)) = self.keeper.take() {
            h.abort();
        }
    }

    /// Brings etcd and the dataplane in line with the model.
    async fn reconcile(&mut self) {
        let Some(cfg) = self.cfg.clone() else { return };
        if !self.listed {
            return;
        }
        if self.retry_at.is_some_and(|t| t > Instant::now()) {
            self.push_snapshot();
            return;
        }
        if self.mine.is_some() {
            self.check_mine(&cfg).await;
        }
        if self.mine.is_none() {
            self.claim(&cfg).await;
        }
        if let Some(m) = &self.mine {
            let id = m.lease_id;
            self.start_keeper(id);
        }
        self.push_snapshot();
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
