//! What can go wrong with a request; `api::ipam` maps each to a gRPC code.

use ipnet::Ipv4Net;

use super::alloc::Attachment;
use super::journal::JournalError;
use super::pool::PoolError;
use super::standing::PoolUsage;
use crate::etcd::EtcdError;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("kolach-controld holds no subnet lease yet (phase {phase}); pods get addresses once it does")]
    NoLease { phase: &'static str },
    #[error("no free address in the default pool (this host's subnet {subnet}, {size} addresses, all in use)")]
    DefaultFull { subnet: Ipv4Net, size: u32 },
    #[error("pool {pool} is exhausted: no free block ({usage}); add a subnet (kolachctl pool add-subnet) or free addresses")]
    NoFreeBlock { pool: String, usage: PoolUsage },
    #[error("pool {pool}: this host's blocks are full and it may hold no more (MaxBlocksPerHost {max}; {usage}); raise MaxBlocksPerHost in the pool's key or free addresses")]
    MaxBlocks {
        pool: String,
        max: u32,
        usage: PoolUsage,
    },
    #[error("pool {pool} does not exist (named by {by}); create it with kolachctl pool create")]
    UnknownPool { pool: String, by: &'static str },
    #[error("pool {pool} is not usable: {why}")]
    BrokenPool { pool: String, why: String },
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("pool {pool} already exists")]
    PoolExists { pool: String },
    #[error("pool {pool} still has {held} blocks held (first {first} by {holder}); delete it once its pods are gone")]
    PoolInUse {
        pool: String,
        held: usize,
        first: Ipv4Net,
        holder: std::net::Ipv4Addr,
    },
    #[error("pool {pool} changed in etcd while being edited; try again")]
    Conflict { pool: String },
    #[error("cannot claim a block of pool {pool}: {source}")]
    Claim { pool: String, source: EtcdError },
    #[error("cannot write pool {pool}: {source}")]
    PoolWrite { pool: String, source: EtcdError },
    #[error("the allocation store is not usable: {0}")]
    Store(String),
    #[error("cannot record the allocation: {0}")]
    Journal(#[from] JournalError),
    #[error("no address is allocated to container {0}")]
    NotFound(Attachment),
    #[error("{0}")]
    BadRequest(String),
    #[error("kolach-controld is stopping")]
    Stopping,
}
