//! The state task's side of losing this host's lease (see
//! [`crate::model::loss`] for what a loss is and how it is told): noticing
//! it, recording it, and settling it when a subnet is held again.

use std::time::SystemTime;

use ipnet::Ipv4Net;
use tokio::time::Instant;
use tracing::{error, warn};

use super::Controller;
use crate::model::lease::Lease;
use crate::model::loss::{describe, outcome, Loss, Outcome};

impl Controller {
    /// This host no longer holds `m`: say so loudly and claim again (the same
    /// subnet if its key is free).
    pub(super) fn lost(&mut self, m: &Lease, reason: &str) {
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
    pub(super) fn kept_alive(&mut self, lease_id: i64, ttl: i64, sent: std::time::Instant) {
        if self.mine.as_ref().is_none_or(|m| m.lease_id != lease_id) {
            return;
        }
        self.keepalive = Some((ttl, std::time::Instant::now()));
        let secs = std::time::Duration::from_secs(ttl.max(0) as u64);
        self.lease_deadline = Some(Instant::from_std(sent) + secs);
    }

    /// The lease's local deadline passed without a keepalive answer.
    pub(super) fn lease_expired(&mut self) {
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
    pub(super) fn settle_loss(&mut self, now: Ipv4Net) {
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
