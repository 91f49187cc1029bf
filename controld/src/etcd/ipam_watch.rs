//! The pool and block watches: the same list + watch + resume loop as the
//! subnets' ([`super::watcher`]), feeding the IPAM task instead of the state
//! task. A compacted or cancelled watch lists again: the IPAM task replaces
//! its table with the listing, so nothing is ever missed.

use etcd_client::{WatchResponse, WatchStream};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::kv::{RawEvent, RawListing};
use super::watcher::{follow, Followed};
use super::{EtcdError, Registry};
use crate::event::{Event, EventTx, Shutdown};

/// Which prefix a [`Watched`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pools,
    Blocks,
}

/// What the watches tell the IPAM task.
#[derive(Debug)]
pub enum Watched {
    Listed(Kind, RawListing),
    Event(Kind, RawEvent),
}

pub type WatchedTx = mpsc::UnboundedSender<Watched>;

/// Runs until shutdown, feeding `out` with `<prefix>/pools/` or `<prefix>/blocks/`.
pub async fn run(kind: Kind, reg: Registry, out: WatchedTx, tx: EventTx, shutdown: Shutdown) {
    let prefix = match kind {
        Kind::Pools => reg.pools_prefix(),
        Kind::Blocks => reg.blocks_prefix(),
    };
    follow(Prefix { kind, prefix, out }, reg, tx, shutdown, None).await
}

struct Prefix {
    kind: Kind,
    prefix: String,
    out: WatchedTx,
}

impl Followed for Prefix {
    type Read = RawListing;
    const NAME: &'static str = "pool/block watch";

    async fn read(&self, reg: &Registry) -> Result<RawListing, EtcdError> {
        reg.list_prefix(&self.prefix).await
    }

    fn send_read(&self, tx: &EventTx, l: RawListing) -> i64 {
        let revision = l.revision;
        debug!(prefix = %self.prefix, revision, keys = l.kvs.len(), "listed");
        let _ = tx.send(Event::EtcdUp);
        let _ = self.out.send(Watched::Listed(self.kind, l));
        revision
    }

    async fn watch(&self, reg: &Registry, start: i64) -> Result<(usize, WatchStream), EtcdError> {
        reg.watch_prefix(&self.prefix, start).await
    }

    fn ended(&self, reg: &Registry, idx: usize, resp: &WatchResponse, resume: i64) -> bool {
        if resp.compact_revision() == 0 {
            reg.stream_failed(idx);
        }
        warn!(prefix = %self.prefix, from_revision = resume, compact_revision = resp.compact_revision(),
            reason = resp.cancel_reason(), "watch ended by etcd; listing again");
        true
    }

    fn send_events(&self, _reg: &Registry, tx: &EventTx, resp: &WatchResponse) -> Option<i64> {
        let _ = tx.send(Event::EtcdUp);
        let mut next = None;
        for ev in resp.events() {
            let Some(e) = Registry::raw_event(&self.prefix, ev) else {
                continue;
            };
            next = Some(e.revision() + 1);
            let _ = self.out.send(Watched::Event(self.kind, e));
        }
        next
    }
}
