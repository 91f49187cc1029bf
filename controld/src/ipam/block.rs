//! Blocks, pure: the value of `<prefix>/blocks/<a.b.c.d>-<len>`, the table of
//! every host's blocks the watch keeps, and which block to claim next.
//!
//! A block is claimed only by a create-if-absent transaction; choosing one
//! here just skips every block that overlaps one already held, so a pool
//! whose BlockLen changed never yields two overlapping blocks.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::pool::PoolSpec;
use crate::model::subnet::{self, overlaps};
use crate::model::text::shown;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block key {0} is not of the form a.b.c.d-len")]
    Key(String),
    #[error("block {block}: value is not a block ({{\"Pool\":..,\"PublicIP\":..}}): {why}")]
    Value { block: Ipv4Net, why: String },
    #[error(
        "block {block}: value is {len} bytes, more than the {MAX_VALUE_BYTES} a block can need"
    )]
    TooLarge { block: Ipv4Net, len: usize },
}

/// A block value is a pool name and an address; anything near this size is
/// not one (and is not worth parsing or holding).
pub const MAX_VALUE_BYTES: usize = 1024;

/// The JSON in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BlockValue {
    pub pool: String,
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
}

impl BlockValue {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a block value serializes")
    }
}

/// One block as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub net: Ipv4Net,
    pub pool: String,
    pub public_ip: Ipv4Addr,
    /// The etcd lease it is attached to (0: none).
    pub lease_id: i64,
    pub mod_revision: i64,
    pub create_revision: i64,
}

/// Decodes one key (the part after `<prefix>/blocks/`) and value.
pub fn decode(
    name: &str,
    value: &[u8],
    lease_id: i64,
    mod_revision: i64,
    create_revision: i64,
) -> Result<Block, BlockError> {
    let net = subnet::parse_key(name).map_err(|_| BlockError::Key(shown(name)))?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(BlockError::TooLarge {
            block: net,
            len: value.len(),
        });
    }
    let v: BlockValue = serde_json::from_slice(value).map_err(|e| BlockError::Value {
        block: net,
        why: e.to_string(),
    })?;
    Ok(Block {
        net,
        pool: v.pool,
        public_ip: v.public_ip,
        lease_id,
        mod_revision,
        create_revision,
    })
}

/// Every block in etcd, by network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockSet {
    blocks: BTreeMap<Ipv4Net, Block>,
}

impl BlockSet {
    pub fn from_blocks(blocks: impl IntoIterator<Item = Block>) -> Self {
        BlockSet {
            blocks: blocks.into_iter().map(|b| (b.net, b)).collect(),
        }
    }

    pub fn get(&self, net: Ipv4Net) -> Option<&Block> {
        self.blocks.get(&net)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Block> {
        self.blocks.values()
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Inserts or replaces; an older revision of a key never replaces a newer one.
    pub fn put(&mut self, b: Block) -> bool {
        match self.blocks.get(&b.net) {
            Some(old) if old.mod_revision > b.mod_revision => false,
            Some(old) if old == &b => false,
            _ => {
                self.blocks.insert(b.net, b);
                true
            }
        }
    }

    pub fn remove(&mut self, net: Ipv4Net) -> Option<Block> {
        self.blocks.remove(&net)
    }

    /// Blocks of `pool` held by `public_ip`, in address order.
    pub fn held<'a>(
        &'a self,
        pool: &'a str,
        public_ip: Ipv4Addr,
    ) -> impl Iterator<Item = &'a Block> {
        self.blocks
            .values()
            .filter(move |b| b.pool == pool && b.public_ip == public_ip)
    }

    /// Blocks held by `public_ip`, any pool.
    pub fn of_host(&self, public_ip: Ipv4Addr) -> impl Iterator<Item = &Block> {
        self.blocks
            .values()
            .filter(move |b| b.public_ip == public_ip)
    }

    /// Blocks of `pool` held by anyone.
    pub fn of_pool<'a>(&'a self, pool: &'a str) -> impl Iterator<Item = &'a Block> {
        self.blocks.values().filter(move |b| b.pool == pool)
    }

    /// Blocks equal to `net` or overlapping it.
    pub fn overlapping(&self, net: Ipv4Net) -> impl Iterator<Item = &Block> {
        self.blocks.values().filter(move |b| overlaps(b.net, net))
    }

    fn overlaps_any(&self, net: Ipv4Net) -> bool {
        self.blocks.keys().any(|b| overlaps(*b, net))
    }

    /// The first block of `pool` that overlaps no block anyone holds, after
    /// skipping `tried` (blocks just lost to another host).
    pub fn free_block(&self, pool: &PoolSpec, tried: &[Ipv4Net]) -> Option<Ipv4Net> {
        pool.blocks()
            .find(|b| !tried.contains(b) && !self.overlaps_any(*b))
    }

    /// How many blocks of `pool` are still free to claim.
    pub fn free_count(&self, pool: &PoolSpec) -> u64 {
        pool.blocks().filter(|b| !self.overlaps_any(*b)).count() as u64
    }
}

/// A block and the PublicIP of the host holding it.
pub type Held = (Ipv4Net, Ipv4Addr);

/// What the snapshot carries: blocks by holder, dropping any that lies in
/// `network` or overlaps an earlier-created block (the dataplane refuses a
/// snapshot with overlapping routes). Returns the kept blocks and the ones
/// dropped, with why.
pub fn routable(set: &BlockSet, network: Ipv4Net) -> (Vec<Held>, Vec<(Ipv4Net, String)>) {
    let mut by_age: Vec<&Block> = set.iter().collect();
    by_age.sort_by_key(|b| (b.create_revision, b.net));
    let mut kept: Vec<(Ipv4Net, Ipv4Addr)> = Vec::new();
    let mut dropped = Vec::new();
    for b in by_age {
        if overlaps(b.net, network) {
            dropped.push((b.net, format!("lies in the overlay Network {network}")));
        } else if let Some((k, _)) = kept.iter().find(|(k, _)| overlaps(*k, b.net)) {
            dropped.push((b.net, format!("overlaps block {k}, held before it")));
        } else {
            kept.push((b.net, b.public_ip));
        }
    }
    kept.sort();
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn block(n: &str, pool: &str, ip: &str, rev: i64) -> Block {
        Block {
            net: net(n),
            pool: pool.into(),
            public_ip: ip.parse().unwrap(),
            lease_id: 7,
            mod_revision: rev,
            create_revision: rev,
        }
    }

    #[test]
    fn decodes_keys_and_values() {
        let b = decode(
            "203.0.113.16-28",
            br#"{"Pool":"blue","PublicIP":"198.18.0.1"}"#,
            9,
            10,
            10,
        )
        .unwrap();
        assert_eq!(b.net, net("203.0.113.16/28"));
        assert_eq!(b.pool, "blue");
        assert_eq!(
            BlockValue {
                pool: "blue".into(),
                public_ip: "198.18.0.1".parse().unwrap()
            }
            .to_json(),
            r#"{"Pool":"blue","PublicIP":"198.18.0.1"}"#
        );
        assert_eq!(
            decode("203.0.113.17-28", b"{}", 0, 1, 1)
                .unwrap_err()
                .to_string(),
            "block key 203.0.113.17-28 is not of the form a.b.c.d-len"
        );
        assert!(decode("203.0.113.16-28", b"{}", 0, 1, 1)
            .unwrap_err()
            .to_string()
            .starts_with("block 203.0.113.16/28: value is not a block"));
        let big = format!(
            r#"{{"Pool":"blue","PublicIP":"198.18.0.1","x":"{}"}}"#,
            "y".repeat(2000)
        );
        assert_eq!(
            decode("203.0.113.16-28", big.as_bytes(), 0, 1, 1)
                .unwrap_err()
                .to_string(),
            format!(
                "block 203.0.113.16/28: value is {} bytes, more than the 1024 a block can need",
                big.len()
            )
        );
    }

    #[test]
    fn the_next_block_skips_held_and_overlapping_ones() {
        let pool = PoolSpec::parse("blue", br#"{"Subnets":["203.0.113.0/24"]}"#).unwrap();
        let mut set = BlockSet::default();
        assert_eq!(set.free_block(&pool, &[]), Some(net("203.0.113.0/28")));
        set.put(block("203.0.113.0/28", "blue", "198.18.0.1", 5));
        assert_eq!(set.free_block(&pool, &[]), Some(net("203.0.113.16/28")));
        // A bigger block from before a BlockLen change covers two of /28.
        set.put(block("203.0.113.32/27", "blue", "198.18.0.2", 6));
        assert_eq!(set.free_block(&pool, &[]), Some(net("203.0.113.16/28")));
        assert_eq!(
            set.free_block(&pool, &[net("203.0.113.16/28")]),
            Some(net("203.0.113.64/28"))
        );
        assert_eq!(set.free_count(&pool), 16 - 3);
        let over: Vec<_> = set
            .overlapping(net("203.0.113.48/28"))
            .map(|b| b.net)
            .collect();
        assert_eq!(over, vec![net("203.0.113.32/27")]);
        assert_eq!(set.overlapping(net("203.0.113.64/28")).count(), 0);
        assert_eq!(set.held("blue", "198.18.0.1".parse().unwrap()).count(), 1);
    }

    #[test]
    fn an_old_revision_never_replaces_a_newer_one() {
        let mut set = BlockSet::default();
        assert!(set.put(block("203.0.113.0/28", "blue", "198.18.0.1", 5)));
        assert!(!set.put(block("203.0.113.0/28", "blue", "198.18.0.2", 4)));
        assert_eq!(
            set.get(net("203.0.113.0/28")).unwrap().public_ip,
            "198.18.0.1".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn routable_drops_blocks_in_the_network_and_overlaps() {
        let set = BlockSet::from_blocks([
            block("203.0.113.0/28", "blue", "198.18.0.1", 5),
            block("203.0.113.0/27", "blue", "198.18.0.2", 6),
            block("10.50.3.0/28", "x", "198.18.0.3", 7),
            block("198.51.100.0/28", "red", "198.18.0.3", 8),
        ]);
        let (kept, dropped) = routable(&set, net("10.50.0.0/16"));
        assert_eq!(
            kept,
            vec![
                (net("198.51.100.0/28"), "198.18.0.3".parse().unwrap()),
                (net("203.0.113.0/28"), "198.18.0.1".parse().unwrap()),
            ]
        );
        assert_eq!(dropped.len(), 2);
        assert_eq!(
            dropped[0].1,
            "overlaps block 203.0.113.0/28, held before it"
        );
        assert_eq!(dropped[1].1, "lies in the overlay Network 10.50.0.0/16");
    }
}
