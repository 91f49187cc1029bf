//! Keeps this host's etcd lease alive: a keepalive every TTL/3 (at most every
//! 60 s). Reports each answer, and reports the lease lost when etcd says it
//! no longer exists; a broken stream is reopened with backoff.

use std::time::Duration;

use super::{retry_after, EtcdError, Registry};
use crate::backoff::Backoff;
use crate::event::{sleep_or_stop, Event, EventTx, Shutdown};

/// How long to wait between keepalives for a lease of `ttl` seconds.
pub fn interval(ttl: i64) -> Duration {
    Duration::from_secs((ttl / 3).clamp(1, 60) as u64)
}

pub async fn keep(reg: Registry, lease_id: i64, tx: EventTx, mut shutdown: Shutdown) {
    let mut backoff = Backoff::etcd();
    loop {
        let opened = tokio::select! {
            r = reg.keep_alive(lease_id) => r,
            _ = shutdown.wait() => return,
        };
        let (idx, mut keeper, mut stream) = match opened {
            Ok(v) => v,
            Err(EtcdError::LeaseGone(_)) => {
                let _ = tx.send(Event::LeaseLost {
                    lease_id,
                    reason: "etcd says the lease no longer exists (expired or revoked)".into(),
                });
                return;
            }
            Err(e) => {
                if !retry_after(&e, &tx, &mut backoff, &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        // Ask at once: the answer tells the TTL and so the interval.
        let mut wait = Duration::ZERO;
        let mut sent = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {
                    sent = std::time::Instant::now();
                    if keeper.keep_alive().await.is_err() {
                        reg.stream_failed(idx);
                        break;
                    }
                    // Until an answer comes, do not ask again.
                    wait = Duration::from_secs(3600);
                }
                msg = stream.message() => match msg {
                    Ok(Some(r)) if r.ttl() <= 0 => {
                        let _ = tx.send(Event::LeaseLost {
                            lease_id,
                            reason: "keepalive answered TTL 0: the lease expired".into(),
                        });
                        return;
                    }
                    Ok(Some(r)) => {
                        backoff.reset();
                        let _ = tx.send(Event::EtcdUp);
                        let _ = tx.send(Event::KeepAlive { lease_id, ttl: r.ttl(), sent });
                        wait = interval(r.ttl());
                    }
                    Ok(None) => {
                        reg.stream_failed(idx);
                        break;
                    }
                    Err(e) => {
                        let msg = reg.stream_broke(idx, "keepalive stream", &e);
                        let _ = tx.send(Event::EtcdDown(msg));
                        break;
                    }
                },
                _ = shutdown.wait() => return,
            }
        }
        if !sleep_or_stop(backoff.next_delay(), &mut shutdown).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_a_third_capped() {
        assert_eq!(interval(86400), Duration::from_secs(60));
        assert_eq!(interval(90), Duration::from_secs(30));
        assert_eq!(interval(6), Duration::from_secs(2));
        assert_eq!(interval(1), Duration::from_secs(1));
    }
}
