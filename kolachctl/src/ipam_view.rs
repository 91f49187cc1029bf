//! Pool, block and address records from `kolach.ipam.v1` replies.

use kolach_proto::ipam::{Allocation, Block, BlockTrouble, IpamStatus, Pool, TroubledBlock};
use serde::Serialize;

use crate::view::{addr, net};

#[derive(Serialize, Debug)]
pub struct PoolRow {
    pub name: String,
    pub subnets: Vec<String>,
    pub block_len: u32,
    pub max_blocks_per_host: u32,
    pub default: bool,
    pub blocks_total: u32,
    pub blocks_held: u32,
    pub blocks_mine: u32,
    pub addresses_in_use: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<Pool> for PoolRow {
    fn from(p: Pool) -> Self {
        PoolRow {
            subnets: p
                .subnets
                .into_iter()
                .filter_map(|s| net(&Some(s)))
                .collect(),
            error: (!p.error.is_empty()).then_some(p.error),
            name: p.name,
            block_len: p.block_len,
            max_blocks_per_host: p.max_blocks_per_host,
            default: p.is_default,
            blocks_total: p.blocks_total,
            blocks_held: p.blocks_held,
            blocks_mine: p.blocks_mine,
            addresses_in_use: p.addresses_in_use,
        }
    }
}

#[derive(Serialize, Debug)]
pub struct BlockRow {
    pub block: Option<String>,
    pub pool: String,
    pub public_ip: Option<String>,
    pub is_self: bool,
    /// This host's blocks only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use: Option<u32>,
    pub size: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_since_unix: Option<i64>,
    /// Why this host's pods in it are in trouble ([`trouble_word`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trouble: Option<&'static str>,
}

/// The word for a block's trouble (`--json`), None when there is none.
pub fn trouble_word(t: BlockTrouble) -> Option<&'static str> {
    match t {
        BlockTrouble::None => None,
        BlockTrouble::Lost => Some("lost"),
        BlockTrouble::OutsidePool => Some("outside_pool"),
        BlockTrouble::PoolGone => Some("pool_gone"),
    }
}

impl From<Block> for BlockRow {
    fn from(b: Block) -> Self {
        let trouble = trouble_word(b.trouble());
        BlockRow {
            block: net(&b.block),
            public_ip: addr(&b.public_ip),
            in_use: (b.is_self || trouble.is_some()).then_some(b.in_use),
            trouble,
            empty_since_unix: (b.empty_since_unix != 0).then_some(b.empty_since_unix),
            pool: b.pool,
            is_self: b.is_self,
            size: b.size,
        }
    }
}

#[derive(Serialize, Debug)]
pub struct AddressRow {
    pub address: Option<String>,
    pub container_id: String,
    pub ifname: String,
    pub pool: String,
    pub block: Option<String>,
    pub network: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub netns: String,
    pub allocated_at_unix: i64,
    /// `kolachctl addresses`: the trouble of the block it lies in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trouble: Option<&'static str>,
}

impl AddressRow {
    /// `namespace/name` as the runtime gave it, `-` when it gave none.
    pub fn pod(&self) -> String {
        match (self.pod_namespace.as_str(), self.pod_name.as_str()) {
            ("", "") => "-".to_string(),
            ("", name) => name.to_string(),
            (ns, name) => format!("{ns}/{name}"),
        }
    }
}

impl From<Allocation> for AddressRow {
    fn from(a: Allocation) -> Self {
        let att = a.attachment.unwrap_or_default();
        AddressRow {
            address: addr(&a.address),
            block: net(&a.block),
            container_id: att.container_id,
            ifname: att.ifname,
            pool: a.pool,
            network: a.network,
            pod_namespace: a.pod_namespace,
            pod_name: a.pod_name,
            netns: a.netns,
            allocated_at_unix: a.allocated_at_unix,
            trouble: None,
        }
    }
}

/// A block this host's pods have addresses in that it can no longer use.
#[derive(Serialize, Debug)]
pub struct TroubledRow {
    pub block: Option<String>,
    pub pool: String,
    pub trouble: &'static str,
    /// `lost`: the host etcd gives the block to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    pub pods: Vec<AddressRow>,
}

impl From<TroubledBlock> for TroubledRow {
    fn from(t: TroubledBlock) -> Self {
        TroubledRow {
            trouble: trouble_word(t.trouble()).unwrap_or("unknown"),
            block: net(&t.block),
            holder: addr(&t.holder),
            pool: t.pool,
            pods: t.allocations.into_iter().map(AddressRow::from).collect(),
        }
    }
}

impl TroubledRow {
    /// The key of its `kolachctl status` line.
    pub fn key(&self) -> &'static str {
        match self.trouble {
            "lost" => "lost block",
            _ => "stray block",
        }
    }

    pub fn render(&self) -> String {
        let block = self.block.as_deref().unwrap_or("?");
        let what = match self.trouble {
            "lost" => format!(
                "{block} (pool {}) belongs to {} in etcd; its addresses may be handed out there again: delete and recreate these pods",
                self.pool,
                self.holder.as_deref().unwrap_or("another host")
            ),
            "pool_gone" => format!(
                "{block}: pool {} is gone from etcd; no new addresses from it, given back once empty",
                self.pool
            ),
            _ => format!(
                "{block} (pool {}) lies outside the pool's subnets now; no new addresses from it, given back once empty",
                self.pool
            ),
        };
        let pods: Vec<String> = self
            .pods
            .iter()
            .map(|p| {
                format!(
                    "{} {} ({}/{})",
                    p.pod(),
                    p.address.as_deref().unwrap_or("?"),
                    short_id(&p.container_id),
                    p.ifname
                )
            })
            .collect();
        let n = pods.len();
        format!(
            "{what}; {n} {}: {}",
            if n == 1 { "pod" } else { "pods" },
            pods.join(", ")
        )
    }
}

/// The `ipam` line of `kolachctl status`.
#[derive(Serialize, Debug)]
pub struct IpamLine {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub default_pool: Option<String>,
    pub pools: u32,
    pub blocks_held: u32,
    pub addresses_in_use: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub troubled_blocks: Vec<TroubledRow>,
}

impl From<IpamStatus> for IpamLine {
    fn from(s: IpamStatus) -> Self {
        IpamLine {
            troubled_blocks: s
                .troubled_blocks
                .into_iter()
                .map(TroubledRow::from)
                .collect(),
            ready: s.ready,
            reason: (!s.reason.is_empty()).then_some(s.reason),
            default_pool: net(&s.default_pool),
            pools: s.pools,
            blocks_held: s.blocks_held,
            addresses_in_use: s.addresses_in_use,
        }
    }
}

impl IpamLine {
    pub fn render(&self) -> String {
        let mut figures = format!(
            "{} pools, {} blocks held, {} addresses in use",
            self.pools, self.blocks_held, self.addresses_in_use
        );
        let lost = self
            .troubled_blocks
            .iter()
            .filter(|t| t.trouble == "lost")
            .count();
        let stray = self.troubled_blocks.len() - lost;
        if lost > 0 {
            figures.push_str(&format!(", {lost} blocks LOST to another host"));
        }
        if stray > 0 {
            figures.push_str(&format!(", {stray} blocks outside their pool"));
        }
        match &self.reason {
            Some(r) if !self.ready => format!("NOT READY: {r} ({figures})"),
            _ => figures,
        }
    }
}

/// A container ID as wide as a table can take (runtimes use 64 hex digits).
pub fn short_id(id: &str) -> String {
    if id.len() > 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        id[..12].to_string()
    } else {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_line_reads_well() {
        let l = IpamLine::from(IpamStatus {
            ready: true,
            pools: 2,
            blocks_held: 1,
            addresses_in_use: 7,
            ..Default::default()
        });
        assert_eq!(l.render(), "2 pools, 1 blocks held, 7 addresses in use");
        let l = IpamLine::from(IpamStatus {
            ready: false,
            reason: "no lease".into(),
            pools: 1,
            ..Default::default()
        });
        assert_eq!(
            l.render(),
            "NOT READY: no lease (1 pools, 0 blocks held, 0 addresses in use)"
        );
        assert_eq!(short_id(&"ab".repeat(32)), "abababababab");
    }

    #[test]
    fn troubled_blocks_name_their_pods() {
        use kolach_proto::ipam::Attachment;
        let pod = |c: &str, ip: [u8; 4]| Allocation {
            attachment: Some(Attachment {
                container_id: c.into(),
                ifname: "eth0".into(),
            }),
            address: Some(std::net::Ipv4Addr::from(ip).into()),
            pool: "blue".into(),
            pod_namespace: "blue".into(),
            pod_name: c.into(),
            ..Default::default()
        };
        let l = IpamLine::from(IpamStatus {
            ready: true,
            pools: 2,
            blocks_held: 1,
            addresses_in_use: 3,
            troubled_blocks: vec![
                TroubledBlock {
                    trouble: BlockTrouble::Lost.into(),
                    block: Some("203.0.113.0/28".parse::<ipnet::Ipv4Net>().unwrap().into()),
                    pool: "blue".into(),
                    holder: Some(std::net::Ipv4Addr::new(198, 18, 0, 3).into()),
                    allocations: vec![pod("a", [203, 0, 113, 0]), pod("b", [203, 0, 113, 1])],
                },
                TroubledBlock {
                    trouble: BlockTrouble::OutsidePool.into(),
                    block: Some("198.51.100.0/28".parse::<ipnet::Ipv4Net>().unwrap().into()),
                    pool: "blue".into(),
                    allocations: vec![pod("c", [198, 51, 100, 5])],
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        assert_eq!(
            l.render(),
            "2 pools, 1 blocks held, 3 addresses in use, 1 blocks LOST to another host, 1 blocks outside their pool"
        );
        let t = &l.troubled_blocks;
        assert_eq!(t[0].key(), "lost block");
        assert_eq!(
            t[0].render(),
            "203.0.113.0/28 (pool blue) belongs to 198.18.0.3 in etcd; its addresses may be handed out there again: delete and recreate these pods; 2 pods: blue/a 203.0.113.0 (a/eth0), blue/b 203.0.113.1 (b/eth0)"
        );
        assert_eq!(t[1].key(), "stray block");
        assert_eq!(
            t[1].render(),
            "198.51.100.0/28 (pool blue) lies outside the pool's subnets now; no new addresses from it, given back once empty; 1 pod: blue/c 198.51.100.5 (c/eth0)"
        );
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(json["troubled_blocks"][0]["trouble"], "lost");
        assert_eq!(json["troubled_blocks"][0]["holder"], "198.18.0.3");
        assert_eq!(json["troubled_blocks"][0]["pods"][1]["pod_name"], "b");
        assert_eq!(short_id("pod-1"), "pod-1");
    }
}
