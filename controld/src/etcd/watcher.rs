//! The two etcd watches: `<prefix>/subnets/` (list, then watch from the list's
//! revision + 1; a broken watch resumes after the last event seen; a compacted
//! revision means list again, so no event is ever skipped) and `<prefix>/config`.

use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::etcd::{Registry, SubnetEvent};
use crate::event::{sleep_or_stop, Event, EventTx, Shutdown};

/// Runs until shutdown, feeding [`Event::Listed`] and [`Event::Subnet`].
pub async fn subnets(reg: Registry, tx: EventTx, shutdown: Shutdown) {
    subnets_from(reg, tx, shutdown, None).await
}

/// Like [`subnets`], but resumes from `resume` (a revision) instead of
/// listing first: what happens after a broken watch.
pub async fn subnets_from(
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
                let listed = tokio::select! {
                    r = reg.list_subnets() => r,
                    _ = shutdown.wait() => return,
                };
                match listed {
                    Ok(l) => {
                        let next = l.revision + 1;
                        debug!(
                            revision = l.revision,
                            leases = l.leases.len(),
                            "listed subnets"
                        );
                        let _ = tx.send(Event::EtcdUp);
                        let _ = tx.send(Event::Listed(l));
                        next
                    }
                    Err(e) => {
                        let _ = tx.send(Event::EtcdDown(e.to_string()));
                        if !sleep_or_stop(backoff.next_delay(), &mut shutdown).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        resume = Some(start);
        let stream = tokio::select! {
            r = reg.watch_subnets(start) => r,
            _ = shutdown.wait() => return,
        };
        let (idx, mut stream) = match stream {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Event::EtcdDown(e.to_string()));
                if !sleep_or_stop(backoff.next_delay(), &mut shutdown).await {
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
                    if resp.compact_revision() > 0 {
                        warn!(
                            from_revision = resume.unwrap_or_default(),
                            compact_revision = resp.compact_revision(),
                            "subnet watch fell behind a compaction (its revision is compacted); listing again and diffing"
                        );
                        resume = None;
                        break;
                    }
                    if resp.canceled() {
                        // Not compacted (e.g. the member lost its leader):
                        // nothing was missed, so resume where we were, on
                        // another endpoint.
                        reg.stream_failed(idx);
                        warn!(
                            resume_from = resume.unwrap_or_default(),
                            reason = resp.cancel_reason(),
                            "subnet watch cancelled by etcd; watching again"
                        );
                        break;
                    }
                    backoff.reset();
                    let _ = tx.send(Event::EtcdUp);
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
                        resume = Some(rev + 1);
                        let _ = tx.send(Event::Subnet(e));
                    }
                }
                Ok(None) => {
                    info!(
                        resume_from = resume.unwrap_or_default(),
                        "subnet watch closed; resuming"
                    );
                    break;
                }
                Err(e) => {
                    reg.stream_failed(idx);
                    let _ = tx.send(Event::EtcdDown(format!(
                        "etcd unreachable at {}: subnet watch broke: {e}",
                        reg.endpoints()
                    )));
                    break;
                }
            }
        }
        if !sleep_or_stop(backoff.next_delay(), &mut shutdown).await {
            return;
        }
    }
}

/// Runs until shutdown, feeding [`Event::Config`] with the key's value on
/// start and on every change.
pub async fn config(reg: Registry, tx: EventTx, mut shutdown: Shutdown) {
    let mut backoff = Backoff::etcd();
    let mut resume: Option<i64> = None;
    loop {
        let start = match resume {
            Some(r) => r,
            None => {
                let got = tokio::select! {
                    r = reg.get_config() => r,
                    _ = shutdown.wait() => return,
                };
                match got {
                    Ok((value, rev)) => {
                        let _ = tx.send(Event::EtcdUp);
                        let _ = tx.send(Event::Config(value));
                        rev + 1
                    }
                    Err(e) => {
                        let _ = tx.send(Event::EtcdDown(e.to_string()));
                        if !sleep_or_stop(backoff.next_delay(), &mut shutdown).await {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        resume = Some(start);
        let stream = tokio::select! {
            r = reg.watch_config(start) => r,
            _ = shutdown.wait() => return,
        };
        let (idx, mut stream) = match stream {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Event::EtcdDown(e.to_string()));
                if !sleep_or_stop(backoff.next_delay(), &mut shutdown).await {
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
                        if resp.compact_revision() == 0 {
                            reg.stream_failed(idx);
                        }
                        debug!("config watch cancelled; reading the key again");
                        resume = None;
                        break;
                    }
                    backoff.reset();
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        resume = Some(kv.mod_revision() + 1);
                        let value = match ev.event_type() {
                            etcd_client::EventType::Put => Some(kv.value().to_vec()),
                            etcd_client::EventType::Delete => None,
                        };
                        let _ = tx.send(Event::Config(value));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    reg.stream_failed(idx);
                    let _ = tx.send(Event::EtcdDown(format!(
                        "etcd unreachable at {}: config watch broke: {e}",
                        reg.endpoints()
                    )));
                    break;
                }
            }
        }
        if !sleep_or_stop(backoff.next_delay(), &mut shutdown).await {
            return;
        }
    }
}
