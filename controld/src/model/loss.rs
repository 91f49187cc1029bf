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
//!
//! Here, pure: what a loss is and what getting a subnet after it amounts to.
//! The state task ([`crate::state`]) notices a loss and settles it.

use std::time::SystemTime;

use ipnet::Ipv4Net;

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
