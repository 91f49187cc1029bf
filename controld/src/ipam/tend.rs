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
//! - A block empty for the grace period is given back.

use std::collections::BTreeMap;
use std::time::Instant;

use ipnet::Ipv4Net;
use tracing::{debug, error, info, warn};

use super::block::{self, BlockValue};
use super::pool::DEFAULT_POOL;
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
            match self.blocks.get(net) {
                Some(b) if b.public_ip == me => {
                    self.taken_logged.remove(&net);
                    continue;
                }
                Some(b) => {
                    if self.taken_logged.insert(net) {
                        error!(block = %net, pool = %pool, addresses = in_use, holder = %b.public_ip,
                            "a block holding this host's pod addresses belongs to another host in etcd; not touching it (delete those pods, or free the addresses with kolachctl ipam check --release)");
                    }
                    continue;
                }
                None => {}
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

    /// Gives back this host's blocks that have been empty for the grace period.
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
            if now.duration_since(since) < self.settings.block_grace {
                continue;
            }
            let key = format!("{}{}", reg.blocks_prefix(), subnet::key_name(b.net));
            match reg.delete_if_unchanged(key, b.mod_revision).await {
                Ok(Written::At(_)) => {
                    info!(block = %b.net, pool = %b.pool, empty_for_s = now.duration_since(since).as_secs(),
                        "gave back an empty block");
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
