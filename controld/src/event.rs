//! What the background tasks tell the state task, and the shutdown signal
//! they all obey.

use kolach_proto::dataplane::SnapshotVersion;
use tokio::sync::{mpsc, watch};

use crate::model::table::{Listing, SubnetEvent};

#[derive(Debug)]
pub enum Event {
    /// An etcd call succeeded (after failures, this clears "unreachable").
    EtcdUp,
    /// An etcd call failed; the message names the endpoints.
    EtcdDown(String),
    /// The raw value of `<prefix>/config`; None when the key is absent.
    Config(Option<Vec<u8>>),
    /// A full listing of `<prefix>/subnets/` (at start and after compaction).
    Listed(Listing),
    Subnet(SubnetEvent),
    /// A keepalive answer: the etcd lease has `ttl` seconds left, counted
    /// from no earlier than `sent` (when the request left), so `sent + ttl`
    /// is never later than the moment etcd expires it.
    KeepAlive {
        lease_id: i64,
        ttl: i64,
        sent: std::time::Instant,
    },
    /// The etcd lease is gone (expired or revoked).
    LeaseLost {
        lease_id: i64,
        reason: String,
    },
    Dataplane(DataplaneEvent),
    /// Every host's pool blocks, after the IPAM task's first listing and on
    /// every change: the snapshot routes them.
    Blocks(std::sync::Arc<crate::ipam::block::BlockSet>),
}

#[derive(Debug)]
pub enum DataplaneEvent {
    Connected,
    Disconnected(String),
    /// The dataplane's answer to the snapshot of `generation`.
    Reply {
        generation: u64,
        applied: bool,
        reason: String,
        applied_version: Option<SnapshotVersion>,
    },
}

pub type EventTx = mpsc::UnboundedSender<Event>;

/// Resolves once shutdown is signalled (or the signaller is gone).
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }
}

/// Sleeps `d`; returns false when shutdown came first.
pub async fn sleep_or_stop(d: std::time::Duration, shutdown: &mut Shutdown) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.wait() => false,
    }
}
