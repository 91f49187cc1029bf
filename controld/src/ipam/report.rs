//! What kolachctl and `status` show: pools, blocks and the IPAM summary,
//! built from the task's tables.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::alloc::Range;
use super::block::Block;
use super::pool::DEFAULT_POOL;
use super::standing::{Trouble, Troubled};
use super::task::Task;

#[derive(Debug, Clone, Default)]
pub struct StatusReport {
    pub ready: bool,
    pub reason: String,
    pub default_pool: Option<Ipv4Net>,
    pub pools: u32,
    pub blocks_held: u32,
    pub addresses_in_use: u32,
    pub mtu: u32,
    /// Blocks this host's pods have addresses in that it can no longer use.
    pub troubled: Vec<Troubled>,
}

#[derive(Debug, Clone, Default)]
pub struct PoolReport {
    pub name: String,
    pub subnets: Vec<Ipv4Net>,
    pub block_len: u8,
    pub max_blocks_per_host: u32,
    pub is_default: bool,
    pub error: String,
    pub blocks_total: u64,
    pub blocks_held: u32,
    pub blocks_mine: u32,
    pub addresses_in_use: u32,
    /// Addresses still free in this host's ranges of the pool: its blocks,
    /// or for the default pool its subnet (less `.0`, `.1` and the last).
    pub addresses_free: u64,
}

#[derive(Debug, Clone)]
pub struct BlockReport {
    pub block: Block,
    pub is_self: bool,
    /// This host's addresses in the block (on another host's block: lost ones).
    pub in_use: u32,
    pub trouble: Option<Trouble>,
    pub size: u32,
    pub empty_since_unix: i64,
}

impl Task {
    pub(super) fn status_report(&self) -> StatusReport {
        // Before the view is borrowed: troubled() borrows it too.
        let troubled = self.troubled();
        let v = self.view.borrow();
        let me = v.public_ip;
        let reason = if let Err(e) = &self.journal {
            format!("the allocation store is not usable: {e}")
        } else if v.subnet.is_none() {
            format!(
                "kolach-controld holds no subnet lease yet (phase {})",
                v.phase
            )
        } else if !self.pools_listed || !self.blocks_listed {
            "kolach-controld is still reading pools and blocks from etcd".to_string()
        } else {
            String::new()
        };
        StatusReport {
            ready: reason.is_empty(),
            reason,
            default_pool: v.subnet,
            pools: self.pools.specs().count() as u32 + 1,
            blocks_held: me.map_or(0, |ip| self.blocks.of_host(ip).count() as u32),
            addresses_in_use: self.allocs.len() as u32,
            mtu: v.mtu,
            troubled,
        }
    }

    pub(super) fn pool_report(&self, name: &str) -> Option<PoolReport> {
        let e = self.pools.get(name)?;
        let me = self.my_ip();
        let spec = e.spec.as_ref();
        Some(PoolReport {
            name: name.to_string(),
            subnets: spec.map(|s| s.subnets.clone()).unwrap_or_default(),
            block_len: spec.map_or(0, |s| s.block_len),
            max_blocks_per_host: spec.map_or(0, |s| s.max_blocks_per_host),
            is_default: false,
            error: e.error.clone().unwrap_or_default(),
            blocks_total: spec.map_or(0, |s| s.block_count()),
            blocks_held: self.blocks.of_pool(name).count() as u32,
            blocks_mine: self
                .blocks
                .of_pool(name)
                .filter(|b| Some(b.public_ip) == me)
                .count() as u32,
            addresses_in_use: self.allocs.iter().filter(|a| a.pool == name).count() as u32,
            addresses_free: self
                .blocks
                .of_pool(name)
                .filter(|b| Some(b.public_ip) == me)
                .map(|b| self.free_in(&Range::block(b.net)))
                .sum(),
        })
    }

    /// The addresses of `r` no allocation holds.
    fn free_in(&self, r: &Range) -> u64 {
        u64::from(r.size()).saturating_sub(self.allocs.in_use(r.block) as u64)
    }

    pub(super) fn pool_reports(&self) -> Vec<PoolReport> {
        let v = self.view.borrow();
        let mut out = vec![PoolReport {
            name: DEFAULT_POOL.to_string(),
            subnets: v.subnet.into_iter().collect(),
            block_len: v.subnet.map_or(0, |s| s.prefix_len()),
            max_blocks_per_host: 0,
            is_default: true,
            error: String::new(),
            blocks_total: 0,
            blocks_held: 0,
            blocks_mine: 0,
            addresses_in_use: self
                .allocs
                .iter()
                .filter(|a| a.pool == DEFAULT_POOL)
                .count() as u32,
            addresses_free: v.subnet.map_or(0, |s| self.free_in(&Range::host_subnet(s))),
        }];
        drop(v);
        out.extend(
            self.pools
                .entries()
                .filter_map(|(name, _)| self.pool_report(name)),
        );
        out
    }

    pub(super) fn block_reports(&self) -> Vec<BlockReport> {
        let me: Option<Ipv4Addr> = self.my_ip();
        let troubles: HashMap<Ipv4Net, Trouble> = self
            .troubled()
            .into_iter()
            .map(|t| (t.block, t.trouble))
            .collect();
        self.blocks
            .iter()
            .map(|b| {
                let is_self = Some(b.public_ip) == me;
                let trouble = troubles.get(&b.net).copied();
                BlockReport {
                    block: b.clone(),
                    is_self,
                    in_use: if is_self || trouble.is_some() {
                        self.allocs.in_use(b.net) as u32
                    } else {
                        0
                    },
                    trouble,
                    size: Range::block(b.net).size(),
                    empty_since_unix: self.empty_since.get(&b.net).map_or(0, |(_, t)| *t),
                }
            })
            .collect()
    }
}
