//! The two etcd watches: `<prefix>/subnets/` (list, then watch from the list's
//! revision + 1; a broken watch resumes after the last event seen; a compacted
//! revision means list again, so no event is ever skipped) and `<prefix>/config`.
//!
//! Both are one loop, `follow`: read the key(s) whole, watch from the
//! read's revision + 1, resume after the last event seen, read again when
//! etcd ends the watch in a way that may have skipped events; with backoff
//! between tries. What differs per key is a `Followed` (the pool and block
//! prefixes' are in `ipam_watch`).

use etcd_client::{EventType, WatchResponse, WatchStream};
use tracing::{debug, info, warn};

use super::{retry_after, EtcdError, Registry};
use crate::backoff::Backoff;
use crate::event::{sleep_or_stop, Event, EventTx, Shutdown};
use crate::model::table::{Listing, SubnetEvent};

/// Runs until shutdown, feeding [`Event::Listed`] and [`Event::Subnet`].
pub async fn subnets(reg: Registry, tx: EventTx, shutdown: Shutdown) {
    subnets_from(reg, tx, shutdown, None).await
}

/// Like [`subnets`], but resumes from `resume` (a revision) instead of
/// listing first: what happens after a broken watch.
pub async fn subnets_from(reg: Registry, tx: EventTx, shutdown: Shutdown, resume: Option<i64>) {
    follow(Subnets, reg, tx, shutdown, resume).await
}

/// Runs until shutdown, feeding [`Event::Config`] with the key's value on
/// start and on every change.
pub async fn config(reg: Registry, tx: EventTx, shutdown: Shutdown) {
    follow(Config, reg, tx, shutdown, None).await
}

/// What [`follow`] does with one key or prefix.
pub(super) trait Followed {
    /// What one read of the key(s) returns.
    type Read;
    /// Names the watch in the message for a broken stream.
    const NAME: &'static str;

    /// Reads the key(s) whole.
    async fn read(&self, reg: &Registry) -> Result<Self::Read, EtcdError>;
    /// Tells the state task what a read found; returns the revision read at.
    fn send_read(&self, tx: &EventTx, read: Self::Read) -> i64;
    /// Opens the watch from `start` (inclusive).
    async fn watch(&self, reg: &Registry, start: i64) -> Result<(usize, WatchStream), EtcdError>;
    /// etcd ended the watch on endpoint `idx` (`resp` is compacted or
    /// cancelled) while it would have resumed from `resume`: whether to read
    /// again (else the watch resumes from `resume`).
    fn ended(&self, reg: &Registry, idx: usize, resp: &WatchResponse, resume: i64) -> bool;
    /// Tells the state task the events of one response; returns the revision
    /// after the last one, if it had any.
    fn send_events(&self, reg: &Registry, tx: &EventTx, resp: &WatchResponse) -> Option<i64>;
    /// The stream closed without an error; the watch resumes from `resume`.
    fn closed(&self, _resume: i64) {}
}

/// The list + watch + resume loop, until shutdown. `resume`: a revision to
/// watch from instead of reading first.
pub(super) async fn follow<F: Followed>(
    f: F,
    reg: Registry,
    tx: EventTx,
    mut shutdown: Shutdown,
    mut resume: Option<i64>,
) {
    let mut backoff = Backoff::etcd();
    loop {
        let start = match resume {
            Some(r) => r,
            None => {
                let read = tokio::select! {
                    r = f.read(&reg) => r,
                    _ = shutdown.wait() => return,
                };
                match read {
                    Ok(read) => f.send_read(&tx, read) + 1,
                    Err(e) => {
                        if !retry_after(&e, &tx, &mut backoff, &mut shutdown).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        resume = Some(start);
        let stream = tokio::select! {
            r = f.watch(&reg, start) => r,
            _ = shutdown.wait() => return,
        };
        let (idx, mut stream) = match stream {
            Ok(s) => s,
            Err(e) => {
                if !retry_after(&e, &tx, &mut backoff, &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = shutdown.wait() => return,
            };
            match msg {
                Ok(Some(resp)) => {
                    if resp.compact_revision() > 0 || resp.canceled() {
                        if f.ended(&reg, idx, &resp, resume.unwrap_or_default()) {
                            resume = None;
                        }
                        break;
                    }
                    backoff.reset();
                    if let Some(next) = f.send_events(&reg, &tx, &resp) {
                        resume = Some(next);
                    }
                }
                Ok(None) => {
                    f.closed(resume.unwrap_or_default());
                    break;
                }
                Err(e) => {
                    let msg = reg.stream_broke(idx, F::NAME, &e);
                    let _ = tx.send(Event::EtcdDown(msg));
                    break;
                }
            }
        }
        if !sleep_or_stop(backoff.next_delay(), &mut shutdown).await {
            return;
        }
    }
}

/// `<prefix>/subnets/`: a compacted watch lists again and diffs; a cancelled
/// one resumes (nothing was missed).
struct Subnets;

impl Followed for Subnets {
    type Read = Listing;
    const NAME: &'static str = "subnet watch";

    async fn read(&self, reg: &Registry) -> Result<Listing, EtcdError> {
        reg.list_subnets().await
    }

    fn send_read(&self, tx: &EventTx, l: Listing) -> i64 {
        let revision = l.revision;
        debug!(
            revision = l.revision,
            leases = l.leases.len(),
            "listed subnets"
        );
        let _ = tx.send(Event::EtcdUp);
        let _ = tx.send(Event::Listed(l));
        revision
    }

    async fn watch(&self, reg: &Registry, start: i64) -> Result<(usize, WatchStream), EtcdError> {
        reg.watch_subnets(start).await
    }

    fn ended(&self, reg: &Registry, idx: usize, resp: &WatchResponse, resume: i64) -> bool {
        if resp.compact_revision() > 0 {
            warn!(
                from_revision = resume,
                compact_revision = resp.compact_revision(),
                "subnet watch fell behind a compaction (its revision is compacted); listing again and diffing"
            );
            return true;
        }
        // Not compacted (e.g. the member lost its leader): nothing was
        // missed, so resume where we were, on another endpoint.
        reg.stream_failed(idx);
        warn!(
            resume_from = resume,
            reason = resp.cancel_reason(),
            "subnet watch cancelled by etcd; watching again"
        );
        false
    }

    fn send_events(&self, reg: &Registry, tx: &EventTx, resp: &WatchResponse) -> Option<i64> {
        let _ = tx.send(Event::EtcdUp);
        let mut next = None;
        for ev in resp.events() {
            let Some(e) = reg.subnet_event(ev) else {
                continue;
            };
            let rev = match &e {
                SubnetEvent::Put(l) => l.mod_revision,
                SubnetEvent::Garbage(g) => g.mod_revision,
                SubnetEvent::Deleted { revision, .. }
                | SubnetEvent::GarbageDeleted { revision, .. } => *revision,
            };
            next = Some(rev + 1);
            let _ = tx.send(Event::Subnet(e));
        }
        next
    }

    fn closed(&self, resume: i64) {
        info!(resume_from = resume, "subnet watch closed; resuming");
    }
}

/// `<prefix>/config`: one key, so an ended watch simply reads it again.
struct Config;

impl Followed for Config {
    type Read = (Option<Vec<u8>>, i64);
    const NAME: &'static str = "config watch";

    async fn read(&self, reg: &Registry) -> Result<Self::Read, EtcdError> {
        reg.get_config().await
    }

    fn send_read(&self, tx: &EventTx, (value, revision): Self::Read) -> i64 {
        let _ = tx.send(Event::EtcdUp);
        let _ = tx.send(Event::Config(value));
        revision
    }

    async fn watch(&self, reg: &Registry, start: i64) -> Result<(usize, WatchStream), EtcdError> {
        reg.watch_config(start).await
    }

    fn ended(&self, reg: &Registry, idx: usize, resp: &WatchResponse, _resume: i64) -> bool {
        if resp.compact_revision() == 0 {
            reg.stream_failed(idx);
        }
        debug!("config watch cancelled; reading the key again");
        true
    }

    fn send_events(&self, _reg: &Registry, tx: &EventTx, resp: &WatchResponse) -> Option<i64> {
        let mut next = None;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            next = Some(kv.mod_revision() + 1);
            let value = match ev.event_type() {
                EventType::Put => Some(kv.value().to_vec()),
                EventType::Delete => None,
            };
            let _ = tx.send(Event::Config(value));
        }
        next
    }
}
