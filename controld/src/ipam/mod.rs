//! Pod addresses (DESIGN §10): the IPAM task and what it decides with.
//!
//! One task owns every allocation of this host, the pools and every host's
//! blocks, and answers the CNI plugin's requests one batch at a time, so two
//! concurrent ADDs can never get one address (coil#347). An ADD that fits a
//! block this host holds writes nothing to etcd (coil#232): it is recorded in
//! the journal under `--state-dir`, one fdatasync per batch.
//!
//! - [`pool`], [`block`], [`alloc`]: the pure parts (rules, tables, order);
//!   [`standing`]: blocks this host can no longer use, a pool's usage.
//! - [`journal`]: the allocations on disk.
//! - `task`: the loop; `allocate`: ADD, DEL, CHECK, GC; `edit`: pool
//!   writes; `tend`: keeping this host's blocks (claimed again when they
//!   still hold addresses, on the current etcd lease, given back when
//!   empty); `report`: what kolachctl and `status` show.

pub mod alloc;
pub mod block;
pub mod error;
pub mod journal;
pub mod pool;
pub mod standing;

mod allocate;
mod edit;
mod report;
mod task;
mod tend;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::sync::{mpsc, oneshot, watch};

pub use alloc::{Allocation, Attachment};
pub use error::IpamError;
pub use report::{BlockReport, PoolReport, StatusReport};
pub use task::spawn;

use crate::api::view::View;

/// What the IPAM task needs from the daemon.
#[derive(Debug, Clone)]
pub struct IpamSettings {
    /// `--state-dir`; the journal lives in `<state-dir>/ipam/`.
    pub state_dir: PathBuf,
    /// How long a block stays empty before it is given back.
    pub block_grace: Duration,
}

/// An ADD's details.
#[derive(Debug, Clone, Default)]
pub struct AllocateArgs {
    pub attachment: Option<Attachment>,
    pub network: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// The plugin config's "pool".
    pub pool: String,
    pub netns: String,
}

/// A new pool, or a subnet for an existing one (kolachctl).
#[derive(Debug, Clone)]
pub enum PoolEdit {
    Create {
        name: String,
        subnets: Vec<Ipv4Net>,
        block_len: Option<u8>,
        max_blocks_per_host: Option<u32>,
    },
    AddSubnet {
        name: String,
        subnet: Ipv4Net,
    },
    Delete {
        name: String,
    },
}

type Reply<T> = oneshot::Sender<Result<T, IpamError>>;

#[derive(Debug)]
enum Request {
    Allocate(AllocateArgs, Reply<(Allocation, bool, u32)>),
    Release(Attachment, Reply<Option<Allocation>>),
    Check(Attachment, Reply<Allocation>),
    Gc(String, HashSet<Attachment>, Reply<Vec<Allocation>>),
    Status(Reply<StatusReport>),
    Addresses(Reply<Vec<Allocation>>),
    Pools(Reply<Vec<PoolReport>>),
    Blocks(Reply<(i64, Vec<BlockReport>)>),
    Edit(PoolEdit, Reply<Option<PoolReport>>),
}

/// How the control API reaches the IPAM task.
#[derive(Debug, Clone)]
pub struct IpamHandle {
    tx: mpsc::Sender<Request>,
}

/// Requests queued beyond this wait for room (back-pressure on the socket).
const QUEUE: usize = 1024;

impl IpamHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, IpamError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| IpamError::Stopping)?;
        rx.await.map_err(|_| IpamError::Stopping)?
    }

    /// The attachment's address (existing = true when it had one already)
    /// and the MTU for the pod.
    pub async fn allocate(&self, a: AllocateArgs) -> Result<(Allocation, bool, u32), IpamError> {
        self.ask(|r| Request::Allocate(a, r)).await
    }

    pub async fn release(&self, a: Attachment) -> Result<Option<Allocation>, IpamError> {
        self.ask(|r| Request::Release(a, r)).await
    }

    pub async fn check(&self, a: Attachment) -> Result<Allocation, IpamError> {
        self.ask(|r| Request::Check(a, r)).await
    }

    pub async fn gc(
        &self,
        network: String,
        valid: HashSet<Attachment>,
    ) -> Result<Vec<Allocation>, IpamError> {
        self.ask(|r| Request::Gc(network, valid, r)).await
    }

    pub async fn status(&self) -> Result<StatusReport, IpamError> {
        self.ask(Request::Status).await
    }

    pub async fn addresses(&self) -> Result<Vec<Allocation>, IpamError> {
        self.ask(Request::Addresses).await
    }

    pub async fn pools(&self) -> Result<Vec<PoolReport>, IpamError> {
        self.ask(Request::Pools).await
    }

    pub async fn blocks(&self) -> Result<(i64, Vec<BlockReport>), IpamError> {
        self.ask(Request::Blocks).await
    }

    pub async fn edit(&self, e: PoolEdit) -> Result<Option<PoolReport>, IpamError> {
        self.ask(|r| Request::Edit(e, r)).await
    }
}

/// The view the state task publishes, as the IPAM task reads it.
pub type ViewRx = watch::Receiver<Arc<View>>;
