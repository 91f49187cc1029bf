//! Losing this host's lease and getting a subnet back, loudly.
//!
//! A lease is lost when etcd says so (key deleted or overwritten, lease
//! expired or revoked) and also when etcd cannot say anything: a host cut off
//! from etcd for longer than its TTL must assume etcd has expired its lease
//! and another host may hold the subnet now. The local deadline is
//! `request sent + TTL answered`, which is never later than etcd's own, so a
//! host never reports a lease that etcd no longer has.
//!
//! After a loss the host claims again (the same subnet if its key is free,
//! else another one) and says what happened in the log (WARN/ERROR lines
//! starting with `LOST`, `RECLAIMED`, `MOVED`), in the status warnings and,
//! while it has no subnet, in the status phase (`reclaiming`).

use std::time::SystemTime;

use ipnet::Ipv4Net;
use tokio::time::Instant;
use tracing::{error, warn};

use crate::controller::Controller;
use crate::lease::Lease;

/// The subnet lost most recently, until a subnet is held again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    pub subnet: Ipv4Net,
    pub reason: String,
    pub at: SystemTime,
}

/// What getting a subnet after a loss amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The same subnet again.
    Reclaimed,
    /// Another subnet: the old one is taken, or no longer fits.
    Moved { from: Ipv4Net },
}

/// Compares the subnet held now with the one lost, pure.
pub fn outcome(loss: &Loss, now: Ipv4Net) -> Outcome {
    if loss.subnet == now {
        Outcome::Reclaimed
    } else {
        Outcome::Moved { from: loss.subnet }
    }
}

/// The status line for a reclaim or a move.
pub fn describe(loss: &Loss, now: Ipv4Net) -> String {
    match outcome(loss, now) {
        Outcome::Reclaimed => format!(
            "reclaimed subnet {now} after losing it ({})",
            loss.reason
        ),
        Outcome::Moved { from } => format!(
            "moved from subnet {from} to {now} after losing {from} ({}); subnet.env rewritten: restart what uses KOLACH_SUBNET",
            loss.reason
        ),
    }
}

impl Controller {
    /// This host no longer holds `m`: say so loudly and claim again (the same
    /// subnet if its key is free).
    pub(crate) fn lost(&mut self, m: &Lease, reason: &str) {
        if self.mine.as_ref().map(|x| x.subnet) != Some(m.subnet) {
            return;
        }
        warn!(subnet = %m.subnet, lease_id = format!("{:x}", m.lease_id), reason,
            "LOST this host's subnet lease; claiming again (the dataplane keeps its routes meanwhile)");
        self.warn_event(format!("lost lease {}: {reason}", m.subnet));
        self.stop_keeper();
        self.previous = Some(m.subnet);
        self.mine = None;
        self.keepalive = None;
        self.lease_deadline = None;
        self.retry_at = None;
        self.loss = Some(Loss {
            subnet: m.subnet,
            reason: reason.to_string(),
            at: SystemTime::now(),
        });
    }

    /// A keepalive answer: etcd keeps the lease for `ttl` seconds from no
    /// earlier than `sent`.
    pub(crate) fn kept_alive(&mut self, lease_id: i64, ttl: i64, sent: std::time::Instant) {
        if self.mine.as_ref().is_none_or(|m| m.lease_id != lease_id) {
            return;
        }
        self.keepalive = Some((ttl, std::time::Instant::now()));
        let secs = std::time::Duration::from_secs(ttl.max(0) as u64);
        self.lease_deadline = Some(Instant::from_std(sent) + secs);
    }

    /// The lease's local deadline passed without a keepalive answer.
    pub(crate) fn lease_expired(&mut self) {
        self.lease_deadline = None;
        let Some(m) = self.mine.clone() else { return };
        if m.is_reservation() {
            return;
        }
        error!(subnet = %m.subnet, lease_id = format!("{:x}", m.lease_id),
            ttl_s = self.settings.lease_ttl.as_secs(),
            "no keepalive answer from etcd within the lease TTL: etcd has expired this host's lease, and another host may take the subnet");
        self.lost(
            &m,
            "it expired: no keepalive answer from etcd within its TTL",
        );
    }

    /// Called when a subnet is held again: logs and records a reclaim or a move.
    pub(crate) fn settle_loss(&mut self, now: Ipv4Net) {
        let Some(loss) = self.loss.take() else { return };
        let line = describe(&loss, now);
        match outcome(&loss, now) {
            Outcome::Reclaimed => {
                warn!(subnet = %now, lost_because = %loss.reason, "RECLAIMED this host's subnet")
            }
            Outcome::Moved { from } => {
                error!(from = %from, to = %now, lost_because = %loss.reason,
                    "MOVED to a new subnet: the old one is taken or no longer fits; subnet.env will be rewritten")
            }
        }
        self.warn_event(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(s: &str) -> Loss {
        Loss {
            subnet: s.parse().unwrap(),
            reason: "our subnet key was deleted".into(),
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn reclaim_or_move() {
        let l = loss("10.50.3.0/24");
        assert_eq!(
            outcome(&l, "10.50.3.0/24".parse().unwrap()),
            Outcome::Reclaimed
        );
        assert_eq!(
            outcome(&l, "10.50.9.0/24".parse().unwrap()),
            Outcome::Moved {
                from: "10.50.3.0/24".parse().unwrap()
            }
        );
        assert_eq!(
            describe(&l, "10.50.3.0/24".parse().unwrap()),
            "reclaimed subnet 10.50.3.0/24 after losing it (our subnet key was deleted)"
        );
        let moved = describe(&l, "10.50.9.0/24".parse().unwrap());
        assert!(
            moved.starts_with("moved from subnet 10.50.3.0/24 to 10.50.9.0/24"),
            "{moved}"
        );
        assert!(moved.contains("subnet.env rewritten"), "{moved}");
    }
}
