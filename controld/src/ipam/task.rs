//! The IPAM task's loop: requests in batches (one journal sync per batch),
//! the pool and block watches, and giving back blocks empty for the grace
//! period.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::alloc::{Allocation, Allocations, Attachment};
use super::block::{self, BlockSet};
use super::journal::{Journal, Record};
use super::pool::PoolSet;
use super::standing::Trouble;
use super::{IpamError, IpamHandle, IpamSettings, Reply, Request, ViewRx, QUEUE};
use crate::etcd::ipam_watch::{Kind, Watched, WatchedTx};
use crate::etcd::kv::{RawEvent, RawKv};
use crate::etcd::Registry;
use crate::event::{Event, EventTx, Shutdown};
use crate::model::noted::Noted;
use crate::model::subnet;

/// Requests answered per journal sync, at most.
const BATCH: usize = 64;

/// How to undo an in-memory change whose journal write failed.
enum Undo {
    Added(Attachment),
    Removed(Allocation),
}

/// A reply held back until the batch is on disk.
enum Deferred {
    Allocate(Reply<(Allocation, bool, u32)>, (Allocation, bool, u32)),
    Release(Reply<Option<Allocation>>, Option<Allocation>),
    Gc(Reply<Vec<Allocation>>, Vec<Allocation>),
}

pub(super) struct Task {
    reg: Arc<OnceLock<Registry>>,
    pub(super) settings: IpamSettings,
    pub(super) view: ViewRx,
    events: EventTx,
    pub(super) allocs: Allocations,
    pub(super) journal: Result<Journal, String>,
    pub(super) pools: PoolSet,
    pub(super) pools_listed: bool,
    pub(super) blocks: BlockSet,
    pub(super) blocks_revision: i64,
    pub(super) blocks_listed: bool,
    /// This host's empty blocks: since when (monotonic, and wall clock for reports).
    pub(super) empty_since: HashMap<Ipv4Net, (Instant, i64)>,
    /// Troubled blocks (see `standing`) as last logged: each is logged
    /// once, and once more when it is resolved.
    pub(super) troubles_logged: HashMap<Ipv4Net, Trouble>,
    /// Block keys that do not decode, by key name: each logged once.
    broken_blocks: Noted<String, String>,
    pending: Vec<Record>,
    undo: Vec<Undo>,
    deferred: Vec<Deferred>,
}

/// Starts the IPAM task. Returns its handle for the API and the sender the
/// pool and block watches feed.
pub fn spawn(
    reg: Arc<OnceLock<Registry>>,
    settings: IpamSettings,
    view: ViewRx,
    events: EventTx,
    shutdown: Shutdown,
) -> (IpamHandle, WatchedTx, JoinHandle<()>) {
    let (req_tx, req_rx) = mpsc::channel(QUEUE);
    let (w_tx, w_rx) = mpsc::unbounded_channel();
    let dir = settings.state_dir.join("ipam");
    let mut allocs = Allocations::default();
    let journal = match Journal::open(&dir) {
        Ok((j, replayed)) => {
            for (block, ip) in replayed.cursors {
                allocs.set_cursor(block, ip);
            }
            for a in replayed.allocations.into_values() {
                allocs.restore(a);
            }
            info!(file = %j.path().display(), allocations = allocs.len(), "allocations restored");
            Ok(j)
        }
        Err(e) => {
            error!(error = %e, "cannot open the allocation store; pods get no addresses until it is fixed and controld restarted");
            Err(e.to_string())
        }
    };
    let task = Task {
        reg,
        settings,
        view,
        events,
        allocs,
        journal,
        pools: PoolSet::default(),
        pools_listed: false,
        blocks: BlockSet::default(),
        blocks_revision: 0,
        blocks_listed: false,
        empty_since: HashMap::new(),
        troubles_logged: HashMap::new(),
        broken_blocks: Noted::default(),
        pending: Vec::new(),
        undo: Vec::new(),
        deferred: Vec::new(),
    };
    let h = tokio::spawn(task.run(req_rx, w_rx, shutdown));
    (IpamHandle { tx: req_tx }, w_tx, h)
}

pub(super) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Task {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut watched: mpsc::UnboundedReceiver<Watched>,
        mut shutdown: Shutdown,
    ) {
        let period = (self.settings.block_grace / 4)
            .clamp(Duration::from_millis(200), Duration::from_secs(30));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut view = self.view.clone();
        loop {
            tokio::select! {
                Some(w) = watched.recv() => self.on_watched(w),
                Some(req) = requests.recv() => {
                    self.handle(req).await;
                    while self.deferred.len() < BATCH {
                        match requests.try_recv() {
                            Ok(r) => self.handle(r).await,
                            Err(_) => break,
                        }
                    }
                    self.commit();
                }
                _ = tick.tick() => self.tend_blocks().await,
                Ok(()) = view.changed() => {
                    let network = view.borrow_and_update().network;
                    let changes = self.pools.set_network(network);
                    self.log_pool_changes(changes);
                }
                _ = shutdown.wait() => break,
            }
        }
        debug!("ipam task stopped");
    }

    async fn handle(&mut self, req: Request) {
        match req {
            Request::Allocate(args, reply) => match self.allocate(args).await {
                Ok((a, existing)) => {
                    let mtu = self.view.borrow().mtu;
                    if existing {
                        let _ = reply.send(Ok((a, true, mtu)));
                    } else {
                        self.pending.push(Record::add(&a));
                        self.undo.push(Undo::Added(a.attachment.clone()));
                        self.deferred
                            .push(Deferred::Allocate(reply, (a, false, mtu)));
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Request::Release(att, reply) => match self.allocs.remove(&att) {
                Some(a) => {
                    info!(container = %att, address = %a.address, pool = %a.pool, "released");
                    self.pending.push(Record::Del { ip: a.address });
                    self.undo.push(Undo::Removed(a.clone()));
                    self.deferred.push(Deferred::Release(reply, Some(a)));
                }
                None => {
                    debug!(container = %att, "release of an unknown attachment");
                    let _ = reply.send(Ok(None));
                }
            },
            Request::Check(att, reply) => {
                let r = self
                    .allocs
                    .get(&att)
                    .cloned()
                    .ok_or(IpamError::NotFound(att));
                let _ = reply.send(r);
            }
            Request::Gc(network, valid, reply) => {
                let stale: Vec<Attachment> = self
                    .allocs
                    .iter()
                    .filter(|a| a.network == network && !valid.contains(&a.attachment))
                    .map(|a| a.attachment.clone())
                    .collect();
                let mut freed = Vec::new();
                for att in stale {
                    if let Some(a) = self.allocs.remove(&att) {
                        self.pending.push(Record::Del { ip: a.address });
                        self.undo.push(Undo::Removed(a.clone()));
                        freed.push(a);
                    }
                }
                info!(network = %network, valid = valid.len(), freed = freed.len(), "garbage collected");
                self.deferred.push(Deferred::Gc(reply, freed));
            }
            Request::Status(reply) => {
                let _ = reply.send(Ok(self.status_report()));
            }
            Request::Addresses(reply) => {
                let _ = reply.send(Ok(self.allocs.iter().cloned().collect()));
            }
            Request::Pools(reply) => {
                let _ = reply.send(Ok(self.pool_reports()));
            }
            Request::Blocks(reply) => {
                let _ = reply.send(Ok((self.blocks_revision, self.block_reports())));
            }
            Request::Edit(e, reply) => {
                let _ = reply.send(self.edit(e).await);
            }
        }
    }

    /// Writes the batch's records with one sync, then answers; on failure
    /// undoes the batch in memory and every request gets the error.
    fn commit(&mut self) {
        let records = std::mem::take(&mut self.pending);
        let undo = std::mem::take(&mut self.undo);
        let deferred = std::mem::take(&mut self.deferred);
        let result = match &mut self.journal {
            Ok(j) => j.append(&records).map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        };
        if let Err(e) = &result {
            error!(error = %e, requests = deferred.len(), "cannot write the allocation journal; the batch is undone");
            for u in undo.into_iter().rev() {
                match u {
                    Undo::Added(att) => {
                        self.allocs.remove(&att);
                    }
                    Undo::Removed(a) => {
                        self.allocs.restore(a);
                    }
                }
            }
        }
        for d in deferred {
            let fail = || IpamError::Store(result.clone().err().unwrap_or_default());
            match d {
                Deferred::Allocate(r, v) => {
                    let _ = r.send(if result.is_ok() { Ok(v) } else { Err(fail()) });
                }
                Deferred::Release(r, v) => {
                    let _ = r.send(if result.is_ok() { Ok(v) } else { Err(fail()) });
                }
                Deferred::Gc(r, v) => {
                    let _ = r.send(if result.is_ok() { Ok(v) } else { Err(fail()) });
                }
            }
        }
        if let Ok(j) = &mut self.journal {
            if j.wants_compaction(self.allocs.len()) {
                if let Err(e) = j.compact(self.allocs.iter(), self.allocs.cursors()) {
                    warn!(error = %e, "cannot compact the allocation journal; it keeps growing");
                }
            }
        }
    }

    fn on_watched(&mut self, w: Watched) {
        match w {
            Watched::Listed(Kind::Pools, l) => {
                self.pools_listed = true;
                let all = l
                    .kvs
                    .into_iter()
                    .map(|kv| (kv.name, kv.value, kv.mod_revision))
                    .collect();
                let changes = self.pools.replace(all);
                self.log_pool_changes(changes);
            }
            Watched::Event(Kind::Pools, RawEvent::Put(kv)) => {
                let changes = self.pools.put(kv.name, kv.value, kv.mod_revision);
                self.log_pool_changes(changes);
            }
            Watched::Event(Kind::Pools, RawEvent::Deleted { name, .. }) => {
                let changes = self.pools.delete(&name);
                self.log_pool_changes(changes);
            }
            Watched::Listed(Kind::Blocks, l) => {
                let mut broken = Vec::new();
                let blocks: Vec<block::Block> = l
                    .kvs
                    .iter()
                    .filter_map(|kv| {
                        decode_block(kv)
                            .map_err(|e| broken.push((kv.name.clone(), e)))
                            .ok()
                    })
                    .collect();
                let changes = self.broken_blocks.update(broken);
                for (key, e) in changes.new {
                    warn!(key = %key, error = %e, "ignoring a broken block key");
                }
                for key in changes.cleared {
                    info!(key = %key, "broken block key fixed or gone");
                }
                self.blocks = BlockSet::from_blocks(blocks);
                self.blocks_revision = l.revision;
                self.blocks_listed = true;
                self.blocks_changed();
            }
            Watched::Event(Kind::Blocks, e) => {
                self.blocks_revision = self.blocks_revision.max(e.revision());
                let changed = match e {
                    RawEvent::Put(kv) => match decode_block(&kv) {
                        Ok(b) => {
                            if self.broken_blocks.clear(&kv.name) {
                                info!(key = %kv.name, "broken block key fixed");
                            }
                            self.blocks.put(b)
                        }
                        Err(e) => {
                            if self.broken_blocks.set(kv.name.clone(), e.clone()) {
                                warn!(key = %kv.name, error = %e, "ignoring a broken block key");
                            }
                            false
                        }
                    },
                    RawEvent::Deleted { name, .. } => {
                        if self.broken_blocks.clear(&name) {
                            info!(key = %name, "broken block key gone");
                        }
                        match subnet::parse_key(&name) {
                            Ok(net) => self.blocks.remove(net).is_some(),
                            Err(_) => false,
                        }
                    }
                };
                if changed {
                    self.blocks_changed();
                }
            }
        }
        self.review_troubles();
    }

    fn log_pool_changes(&self, changes: Vec<(String, Option<String>)>) {
        for (name, error) in changes {
            match (error, self.pools.spec(&name)) {
                (Some(e), _) => warn!(pool = %name, "{e}"),
                (None, Some(s)) => {
                    info!(pool = %name, subnets = ?s.subnets.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    block_len = s.block_len, max_blocks_per_host = s.max_blocks_per_host, "pool in use")
                }
                (None, None) => info!(pool = %name, "pool deleted"),
            }
        }
    }

    /// Tells the state task (it routes every host's blocks).
    pub(super) fn blocks_changed(&self) {
        if self.blocks_listed {
            let _ = self
                .events
                .send(Event::Blocks(Arc::new(self.blocks.clone())));
        }
    }

    /// The etcd client, once controld has connected.
    pub(super) fn reg(&self) -> Result<Registry, IpamError> {
        self.reg.get().cloned().ok_or(IpamError::NoLease {
            phase: "connecting to etcd",
        })
    }

    pub(super) fn my_ip(&self) -> Option<Ipv4Addr> {
        self.view.borrow().public_ip
    }
}

/// A block key as etcd holds it, or why it is not one (for the log).
fn decode_block(kv: &RawKv) -> Result<block::Block, String> {
    block::decode(
        &kv.name,
        &kv.value,
        kv.lease,
        kv.mod_revision,
        kv.create_revision,
    )
    .map_err(|e| e.to_string())
}
