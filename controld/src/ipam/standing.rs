//! Where this host's pool blocks stand, pure: the blocks its pods still have
//! addresses in that it can no longer use, and a pool's usage for the
//! errors that tell why an ADD got no address.
//!
//! A block is troubled when etcd gives it to another host (this host's etcd
//! lease expired while it was cut off and another host claimed the block:
//! its pods' addresses may be handed out again there), when the pool's
//! subnets no longer include it (a subnet removed by an edit in etcd), or
//! when the pool is gone. No new address comes out of a troubled block; one
//! still held by this host is given back once empty.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::alloc::{Allocation, Allocations};
use super::block::BlockSet;
use super::pool::{PoolSet, PoolSpec, DEFAULT_POOL};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trouble {
    /// etcd gives the block to the host at `holder`.
    Lost { holder: Ipv4Addr },
    /// The pool's subnets no longer include the block.
    OutsidePool,
    /// The pool's key is gone from etcd.
    PoolGone,
}

impl Trouble {
    /// The word `kolachctl --json` and the logs use.
    pub fn as_str(&self) -> &'static str {
        match self {
            Trouble::Lost { .. } => "lost",
            Trouble::OutsidePool => "outside_pool",
            Trouble::PoolGone => "pool_gone",
        }
    }
}

/// One troubled block and the allocations of this host in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Troubled {
    pub block: Ipv4Net,
    pub pool: String,
    pub trouble: Trouble,
    pub allocations: Vec<Allocation>,
}

/// Why a block of `pool` this host holds can hand out no address, judged by
/// the pool definitions alone (None: it can). A pool whose key holds no
/// usable definition yet is not judged: its blocks are left as they are.
pub fn unusable(block: Ipv4Net, pool: &str, pools: &PoolSet) -> Option<Trouble> {
    match pools.get(pool) {
        None => Some(Trouble::PoolGone),
        Some(e) => match &e.spec {
            Some(s) if !s.contains(block) => Some(Trouble::OutsidePool),
            _ => None,
        },
    }
}

/// Every block holding addresses of this host (`me`) that it cannot keep
/// using, in address order: lost when etcd has another host's block there or
/// overlapping it. A block missing from etcd is not troubled: it is claimed
/// back (see `tend`).
pub fn troubled(
    allocs: &Allocations,
    blocks: &BlockSet,
    pools: &PoolSet,
    me: Ipv4Addr,
) -> Vec<Troubled> {
    let mut by_block: BTreeMap<Ipv4Net, Vec<&Allocation>> = BTreeMap::new();
    for a in allocs.iter().filter(|a| a.pool != DEFAULT_POOL) {
        by_block.entry(a.block).or_default().push(a);
    }
    by_block
        .into_iter()
        .filter_map(|(net, list)| {
            let pool = list[0].pool.clone();
            // Another host's block at the same place, or one overlapping it
            // (claimed after a BlockLen change), takes the addresses over.
            let theirs = blocks.overlapping(net).find(|b| b.public_ip != me);
            let trouble = match theirs {
                Some(b) => Trouble::Lost {
                    holder: b.public_ip,
                },
                None => unusable(net, &pool, pools)?,
            };
            Some(Troubled {
                block: net,
                pool,
                trouble,
                allocations: list.into_iter().cloned().collect(),
            })
        })
        .collect()
}

/// How much of a pool is taken, for the exhaustion errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    pub subnets: String,
    pub blocks_total: u64,
    /// Blocks of the pool that cannot be claimed (held, or overlapped by a
    /// held block).
    pub blocks_taken: u64,
    /// Hosts holding blocks of the pool.
    pub hosts: usize,
    /// Blocks of the pool this host holds inside its subnets.
    pub blocks_mine: usize,
    /// Addresses of the pool this host has given out.
    pub addresses_mine: usize,
}

impl PoolUsage {
    pub fn of(spec: &PoolSpec, blocks: &BlockSet, allocs: &Allocations, me: Ipv4Addr) -> Self {
        let inside: Vec<_> = blocks
            .of_pool(&spec.name)
            .filter(|b| spec.contains(b.net))
            .collect();
        let total = spec.block_count();
        PoolUsage {
            subnets: spec
                .subnets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            blocks_total: total,
            blocks_taken: total - blocks.free_count(spec).min(total),
            hosts: inside
                .iter()
                .map(|b| b.public_ip)
                .collect::<BTreeSet<_>>()
                .len(),
            blocks_mine: inside.iter().filter(|b| b.public_ip == me).count(),
            addresses_mine: allocs.iter().filter(|a| a.pool == spec.name).count(),
        }
    }
}

fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl fmt::Display for PoolUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} of {} held, by {}; this host: {}, {} in use",
            self.blocks_taken,
            counted(self.blocks_total, "block", "blocks"),
            self.subnets,
            counted(self.hosts as u64, "host", "hosts"),
            counted(self.blocks_mine as u64, "block", "blocks"),
            counted(self.addresses_mine as u64, "address", "addresses"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::alloc::Attachment;
    use crate::ipam::block::Block;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn block(n: &str, pool: &str, holder: &str) -> Block {
        Block {
            net: net(n),
            pool: pool.into(),
            public_ip: ip(holder),
            lease_id: 7,
            mod_revision: 1,
            create_revision: 1,
        }
    }

    fn alloc(t: &mut Allocations, c: &str, address: &str, pool: &str, block: &str) {
        t.insert(Allocation {
            attachment: Attachment {
                container_id: c.into(),
                ifname: "eth0".into(),
            },
            address: ip(address),
            pool: pool.into(),
            block: net(block),
            network: "kolach".into(),
            pod_namespace: pool.into(),
            pod_name: c.into(),
            netns: String::new(),
            allocated_at_unix: 0,
        });
    }

    fn pools(defs: &[(&str, &str)]) -> PoolSet {
        let mut set = PoolSet::default();
        set.replace(
            defs.iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec(), 1))
                .collect(),
        );
        set
    }

    const ME: &str = "198.18.0.1";

    #[test]
    fn lost_outside_and_gone_blocks_are_troubled_with_their_pods() {
        let pools = pools(&[
            ("blue", r#"{"Subnets":["203.0.113.0/24"]}"#),
            // red had 198.51.100.0/24 too; an edit in etcd removed it.
            ("red", r#"{"Subnets":["192.0.2.0/24"]}"#),
        ]);
        let blocks = BlockSet::from_blocks([
            block("203.0.113.0/28", "blue", "198.18.0.2"),
            block("203.0.113.64/27", "blue", "198.18.0.3"),
            block("203.0.113.16/28", "blue", ME),
            block("198.51.100.0/28", "red", ME),
            block("192.0.2.0/28", "red", ME),
        ]);
        let mut t = Allocations::default();
        alloc(&mut t, "a", "203.0.113.1", "blue", "203.0.113.0/28");
        alloc(&mut t, "b", "203.0.113.2", "blue", "203.0.113.0/28");
        alloc(&mut t, "c", "203.0.113.17", "blue", "203.0.113.16/28");
        alloc(&mut t, "d", "198.51.100.3", "red", "198.51.100.0/28");
        alloc(&mut t, "e", "192.0.2.1", "red", "192.0.2.0/28");
        alloc(&mut t, "f", "100.64.0.1", "green", "100.64.0.0/28");
        // Missing from etcd: claimed back, not troubled.
        alloc(&mut t, "g", "203.0.113.33", "blue", "203.0.113.32/28");
        // Inside a bigger block another host claimed (BlockLen changed).
        alloc(&mut t, "i", "203.0.113.70", "blue", "203.0.113.64/28");
        alloc(&mut t, "h", "10.50.3.2", DEFAULT_POOL, "10.50.3.0/24");
        let got = troubled(&t, &blocks, &pools, ip(ME));
        let summary: Vec<_> = got
            .iter()
            .map(|x| {
                (
                    x.block.to_string(),
                    x.pool.as_str(),
                    x.trouble,
                    x.allocations
                        .iter()
                        .map(|a| a.attachment.container_id.as_str())
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "100.64.0.0/28".to_string(),
                    "green",
                    Trouble::PoolGone,
                    vec!["f"]
                ),
                (
                    "198.51.100.0/28".to_string(),
                    "red",
                    Trouble::OutsidePool,
                    vec!["d"]
                ),
                (
                    "203.0.113.0/28".to_string(),
                    "blue",
                    Trouble::Lost {
                        holder: ip("198.18.0.2")
                    },
                    vec!["a", "b"]
                ),
                (
                    "203.0.113.64/28".to_string(),
                    "blue",
                    Trouble::Lost {
                        holder: ip("198.18.0.3")
                    },
                    vec!["i"]
                ),
            ]
        );
        assert_eq!(got[2].trouble.as_str(), "lost");
    }

    #[test]
    fn a_pool_without_a_usable_definition_is_not_judged() {
        let pools = pools(&[("blue", r#"{"Subnets":["x"]}"#)]);
        assert_eq!(unusable(net("203.0.113.0/28"), "blue", &pools), None);
        assert_eq!(
            unusable(net("203.0.113.0/28"), "red", &pools),
            Some(Trouble::PoolGone)
        );
    }

    #[test]
    fn usage_counts_blocks_hosts_and_this_hosts_addresses() {
        let spec = PoolSpec::parse(
            "tiny",
            br#"{"Subnets":["192.0.2.0/29"],"BlockLen":30,"MaxBlocksPerHost":1}"#,
        )
        .unwrap();
        let mut blocks = BlockSet::default();
        let mut t = Allocations::default();
        let u = PoolUsage::of(&spec, &blocks, &t, ip(ME));
        assert_eq!(
            u.to_string(),
            "0 of 2 blocks of 192.0.2.0/29 held, by 0 hosts; this host: 0 blocks, 0 addresses in use"
        );
        blocks.put(block("192.0.2.0/30", "tiny", ME));
        blocks.put(block("192.0.2.4/30", "tiny", "198.18.0.2"));
        for i in 0..4 {
            alloc(
                &mut t,
                &format!("p{i}"),
                &format!("192.0.2.{i}"),
                "tiny",
                "192.0.2.0/30",
            );
        }
        let u = PoolUsage::of(&spec, &blocks, &t, ip(ME));
        assert_eq!(
            (u.blocks_taken, u.hosts, u.blocks_mine, u.addresses_mine),
            (2, 2, 1, 4)
        );
        assert_eq!(
            u.to_string(),
            "2 of 2 blocks of 192.0.2.0/29 held, by 2 hosts; this host: 1 block, 4 addresses in use"
        );
    }
}
