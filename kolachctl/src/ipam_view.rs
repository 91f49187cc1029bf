//! Pool, block and address records from `kolach.ipam.v1` replies.

use kolach_proto::ipam::{Allocation, Block, IpamStatus, Pool};
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
}

impl From<Block> for BlockRow {
    fn from(b: Block) -> Self {
        BlockRow {
            block: net(&b.block),
            public_ip: addr(&b.public_ip),
            in_use: b.is_self.then_some(b.in_use),
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
        }
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
}

impl From<IpamStatus> for IpamLine {
    fn from(s: IpamStatus) -> Self {
        IpamLine {
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
        let figures = format!(
            "{} pools, {} blocks held, {} addresses in use",
            self.pools, self.blocks_held, self.addresses_in_use
        );
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
        assert_eq!(short_id("pod-1"), "pod-1");
    }
}
