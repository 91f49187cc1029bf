//! Keeping this host's blocks in line with its allocations, on every tick:
//!
//! - A block that still holds addresses of this host but is gone from etcd
//!   (its etcd lease expired while the host was cut off, or someone deleted
//!   the key) is claimed again, by the same create-if-absent transaction; one
//!   another host took meanwhile is reported, never overwritten.
//! - A block of this host attached to another etcd lease than the host's
//!   subnet (the lease was lost and a new one granted) is moved onto the
//!   current lease by a transaction on its mod revision, so it lives and
//!   dies with the subnet again.
//! - A block empty for the grace period is given back; one outside its
//!   pool's subnets (or of a pool gone from etcd) as soon as it is empty.
//! - A troubled block (see `standing`: lost to another host, outside its
//!   pool) is logged once, loudly, and once more when resolved; `status`
//!   lists it with its pods meanwhile.
//!
//! Giving a block back is a delete on its mod revision: it happens only if
//! the key is unchanged since this host last saw it, still this host's, and
//! the emptiness is checked in the same turn of the task, so no ADD can
//! slip in between.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tracing::{debug, error, info, warn};

use super::alloc::Allocation;
use super::block::{self, BlockValue};
use super::pool::DEFAULT_POOL;
use super::standing::{self, Trouble, Troubled};
use super::task::{now_unix, Task};
use crate::etcd::kv::Written;
use crate::etcd::Registry;
use crate::model::subnet;

impl Task {
    pub(super) async fn tend_blocks(&mut self) {
        // Without the listing or the journal, what this host holds is unknown.
        if !self.blocks_listed || self.journal.is_err() {
            return;
        }
        let (Some(me), Ok(reg)) = (self.my_ip(), self.reg()) else {
            return;
        };
        let (lease_id, has_lease) = {
            let v = self.view.borrow();
            (v.lease_id, v.subnet.is_some())
        };
        if has_lease {
            self.claim_back(&reg, me, lease_id).await;
            if lease_id != 0 {
                self.move_to_lease(&reg, me, lease_id).await;
            }
        }
        self.give_back_empty(&reg, me).await;
        self.review_troubles();
    }

    /// The troubled blocks now (none before pools and blocks are listed).
    pub(super) fn troubled(&self) -> Vec<Troubled> {
        match self.my_ip() {
            Some(me) if self.pools_listed && self.blocks_listed => {
                standing::troubled(&self.allocs, &self.blocks, &self.pools, me)
            }
            _ => Vec::new(),
        }
    }

    /// Logs troubled blocks that are new or changed, and those resolved.
    pub(super) fn review_troubles(&mut self) {
        if !self.pools_listed || !self.blocks_listed {
            return;
        }
        let now = self.troubled();
        let mut seen = HashMap::new();
        for t in &now {
            seen.insert(t.block, t.trouble);
            if self.troubles_logged.get(&t.block) == Some(&t.trouble) {
                continue;
            }
            let pods = pods_text(&t.allocations);
            let count = t.allocations.len();
            match t.trouble {
                Trouble::Lost { holder } => {
                    error!(block = %t.block, pool = %t.pool, holder = %holder, count, pods = %pods,
                    "LOST a block this host's pods have addresses in: etcd gives it to another host (this host's etcd lease expired while it was cut off, and that host claimed the block), so their addresses may be handed out there again and traffic to them goes there; delete and recreate those pods (DEL frees the addresses; kolachctl ipam check --release frees those whose pods are already gone)")
                }
                Trouble::OutsidePool => {
                    warn!(block = %t.block, pool = %t.pool, count, pods = %pods,
                    "a block of this host lies outside its pool's subnets now (the pool's definition changed in etcd): no new addresses come out of it, and it is given back once its pods are gone")
                }
                Trouble::PoolGone => warn!(block = %t.block, pool = %t.pool, count, pods = %pods,
                    "the pool of a block this host holds is gone from etcd: no new addresses come out of the block, and it is given back once its pods are gone"),
            }
        }
        for (net, was) in &self.troubles_logged {
            if !seen.contains_key(net) {
                info!(block = %net, was = was.as_str(), "block no longer troubled: its pods are gone, or it is this host's and in its pool again");
            }
        }
        self.troubles_logged = seen;
    }

    /// Claims again the blocks this host's allocations are in that etcd no
    /// longer holds.
    async fn claim_back(&mut self, reg: &Registry, me: std::net::Ipv4Addr, lease_id: i64) {
        let mut needed: BTreeMap<Ipv4Net, (String, usize)> = BTreeMap::new();
        for a in self.allocs.iter().filter(|a| a.pool != DEFAULT_POOL) {
            needed
                .entry(a.block)
                .or_insert_with(|| (a.pool.clone(), 0))
                .1 += 1;
        }
        for (net, (pool, in_use)) in needed {
            // A block there, or one overlapping it, is never touched: this
            // host's own is kept as it is, another host's is reported
            // (review_troubles).
            if self.blocks.overlapping(net).next().is_some() {
                continue;
            }
            let value = BlockValue {
                pool: pool.clone(),
                public_ip: me,
            };
            let key = format!("{}{}", reg.blocks_prefix(), subnet::key_name(net));
            match reg.create_if_absent(key, value.to_json(), lease_id).await {
                Ok(Written::At(rev)) => {
                    warn!(block = %net, pool = %pool, addresses = in_use,
                        "claimed back a block that still holds pod addresses (its key was gone: the etcd lease expired or it was deleted)");
                    self.blocks.put(block::Block {
                        net,
                        pool,
                        public_ip: me,
                        lease_id,
                        mod_revision: rev,
                        create_revision: rev,
                    });
                    self.blocks_changed();
                }
                Ok(Written::Conflict) => {
                    debug!(block = %net, "block key exists again; the watch will tell")
                }
                Err(e) => debug!(block = %net, error = %e, "cannot claim a block back now"),
            }
        }
    }

    /// Moves this host's blocks on other etcd leases onto `lease_id`.
    async fn move_to_lease(&mut self, reg: &Registry, me: std::net::Ipv4Addr, lease_id: i64) {
        let stray: Vec<block::Block> = self
            .blocks
            .of_host(me)
            .filter(|b| b.lease_id != lease_id)
            .cloned()
            .collect();
        for b in stray {
            let value = BlockValue {
                pool: b.pool.clone(),
                public_ip: me,
            };
            let key = format!("{}{}", reg.blocks_prefix(), subnet::key_name(b.net));
            match reg
                .put_if_unchanged(key, value.to_json(), b.mod_revision, lease_id)
                .await
            {
                Ok(Written::At(rev)) => {
                    info!(block = %b.net, pool = %b.pool, old_lease = format!("{:x}", b.lease_id),
                        lease = format!("{lease_id:x}"), "block moved onto this host's etcd lease");
                    self.blocks.put(block::Block {
                        lease_id,
                        mod_revision: rev,
                        ..b
                    });
                }
                Ok(Written::Conflict) => {
                    debug!(block = %b.net, "block changed in etcd; not moving it now")
                }
                Err(e) => {
                    debug!(block = %b.net, error = %e, "cannot move a block onto the lease now")
                }
            }
        }
    }

    /// Gives back this host's blocks that have been empty for the grace
    /// period, and at once those no longer of use (outside the pool).
    async fn give_back_empty(&mut self, reg: &Registry, me: std::net::Ipv4Addr) {
        let now = Instant::now();
        let mine: Vec<block::Block> = self.blocks.of_host(me).cloned().collect();
        self.empty_since
            .retain(|net, _| mine.iter().any(|b| b.net == *net));
        for b in mine {
            if self.allocs.in_use(b.net) > 0 {
                self.empty_since.remove(&b.net);
                continue;
            }
            let (since, _) = *self.empty_since.entry(b.net).or_insert((now, now_unix()));
            let unusable = if self.pools_listed {
                standing::unusable(b.net, &b.pool, &self.pools)
            } else {
                None
            };
            let grace = match unusable {
                Some(_) => Duration::ZERO,
                None => self.settings.block_grace,
            };
            if now.duration_since(since) < grace {
                continue;
            }
            let key = format!("{}{}", reg.blocks_prefix(), subnet::key_name(b.net));
            match reg.delete_if_unchanged(key, b.mod_revision).await {
                Ok(Written::At(_)) => {
                    info!(block = %b.net, pool = %b.pool, empty_for_s = now.duration_since(since).as_secs(),
                        unusable = unusable.map_or("", |t| t.as_str()), "gave back an empty block");
                    self.blocks.remove(b.net);
                    self.empty_since.remove(&b.net);
                    self.blocks_changed();
                }
                Ok(Written::Conflict) => {
                    debug!(block = %b.net, "block changed in etcd; not giving it back now")
                }
                Err(e) => debug!(block = %b.net, error = %e, "cannot give back a block now"),
            }
        }
    }
}

/// The pods of a troubled block for a log line: at most 10, then how many more.
fn pods_text(list: &[Allocation]) -> String {
    const SHOWN: usize = 10;
    let mut parts: Vec<String> = list.iter().take(SHOWN).map(pod_text).collect();
    if list.len() > SHOWN {
        parts.push(format!("and {} more", list.len() - SHOWN));
    }
    parts.join(", ")
}

/// `namespace/name address (container/ifname)`, the pod's name left out when
/// the runtime gave none.
fn pod_text(a: &Allocation) -> String {
    let pod = match (a.pod_namespace.as_str(), a.pod_name.as_str()) {
        ("", "") => String::new(),
        ("", name) => format!("{name} "),
        (ns, name) => format!("{ns}/{name} "),
    };
    format!("{pod}{} ({})", a.address, a.attachment)
}
