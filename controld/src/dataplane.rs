//! Pushing snapshots to kolach-dataplaned over `Dataplane.Sync`.
//!
//! Every message is a full snapshot. The task sends the current one as soon
//! as the stream opens, then each new one; when the stream breaks (dataplane
//! restart or upgrade) it reconnects with backoff, 100 ms doubling to 1 s,
//! and sends the current snapshot again.

use std::collections::VecDeque;
use std::path::PathBuf;

use kolach_proto::dataplane::dataplane_client::DataplaneClient;
use kolach_proto::dataplane::Snapshot;
use kolach_proto::uds;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::event::{sleep_or_stop, DataplaneEvent, Event, EventTx, Shutdown};

fn generation(s: &Snapshot) -> u64 {
    s.version.as_ref().map_or(0, |v| v.generation)
}

pub async fn sync(
    socket: PathBuf,
    mut snapshots: watch::Receiver<Option<Snapshot>>,
    tx: EventTx,
    mut shutdown: Shutdown,
) {
    let mut backoff = Backoff::dataplane();
    let mut last_error = String::new();
    let send = |e: DataplaneEvent| {
        let _ = tx.send(Event::Dataplane(e));
    };
    loop {
        let connected = tokio::select! {
            r = uds::connect(&socket, "kolach-dataplaned") => r,
            _ = shutdown.wait() => return,
        };
        let channel = match connected {
            Ok(c) => c,
            Err(e) => {
                let msg = e.to_string();
                if msg != last_error {
                    info!(error = %msg, "waiting for the dataplane");
                    send(DataplaneEvent::Disconnected(msg.clone()));
                    last_error = msg;
                }
                if !sleep_or_stop(backoff.next_delay(), &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        last_error.clear();
        send(DataplaneEvent::Connected);
        // Open the stream only with a snapshot to send, so the dataplane never
        // waits on an empty stream and never sees anything but a full table.
        if snapshots.borrow().is_none() {
            tokio::select! {
                r = snapshots.wait_for(Option::is_some) => if r.is_err() { return },
                _ = shutdown.wait() => return,
            }
        }
        let (out_tx, out_rx) = mpsc::channel::<Snapshot>(8);
        let mut sent: VecDeque<u64> = VecDeque::new();
        let current = snapshots
            .borrow_and_update()
            .clone()
            .expect("waited for Some");
        sent.push_back(generation(&current));
        let _ = out_tx.try_send(current);
        let mut client = DataplaneClient::new(channel);
        let opened = tokio::select! {
            r = client.sync(ReceiverStream::new(out_rx)) => r,
            _ = shutdown.wait() => return,
        };
        let mut inbound = match opened {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let msg = format!("Sync refused: {}", status.message());
                warn!(code = ?status.code(), error = %msg, "dataplane");
                send(DataplaneEvent::Disconnected(msg.clone()));
                last_error = msg;
                if !sleep_or_stop(backoff.next_delay(), &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        info!(socket = %socket.display(), "dataplane connected; snapshot sent");
        backoff.reset();
        let why = loop {
            tokio::select! {
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let Some(s) = snapshots.borrow_and_update().clone() else { continue };
                    sent.push_back(generation(&s));
                    if out_tx.send(s).await.is_err() {
                        break "stream closed".to_string();
                    }
                }
                reply = inbound.message() => match reply {
                    Ok(Some(r)) => {
                        let generation = sent.pop_front().unwrap_or_default();
                        debug!(generation, applied = r.applied, reason = %r.reason, "dataplane replied");
                        send(DataplaneEvent::Reply {
                            generation,
                            applied: r.applied,
                            reason: r.reason,
                            applied_version: r.applied_version,
                        });
                    }
                    Ok(None) => break "dataplane closed the stream".to_string(),
                    Err(status) => break format!("stream broke: {}", status.message()),
                },
                _ = shutdown.wait() => return,
            }
        };
        warn!(reason = %why, "dataplane disconnected; reconnecting");
        send(DataplaneEvent::Disconnected(why));
        if !sleep_or_stop(backoff.next_delay(), &mut shutdown).await {
            return;
        }
    }
}
