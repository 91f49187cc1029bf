//! The snapshot ordering rule (DESIGN §6): the dataplane never replaces
//! a newer table with an older one.

use std::fmt;

use kolach_proto::dataplane as pb;

/// (controld epoch, generation, etcd revision); ordered by [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Version {
    pub epoch: u64,
    pub generation: u64,
    pub etcd_revision: i64,
}

impl From<&pb::SnapshotVersion> for Version {
    fn from(v: &pb::SnapshotVersion) -> Self {
        Version {
            epoch: v.epoch,
            generation: v.generation,
            etcd_revision: v.etcd_revision,
        }
    }
}

impl From<Version> for pb::SnapshotVersion {
    fn from(v: Version) -> Self {
        pb::SnapshotVersion {
            epoch: v.epoch,
            generation: v.generation,
            etcd_revision: v.etcd_revision,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "(epoch {}, generation {}, etcd revision {})",
            self.epoch, self.generation, self.etcd_revision
        )
    }
}

/// What to do with an incoming snapshot given the applied one's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Apply,
    /// Same version as applied: nothing to do, but the answer is "applied".
    AlreadyApplied,
    Refuse(String),
}

/// The ordering rule: within one controld epoch generations only grow; across
/// epochs, a snapshot is accepted iff it was built from an etcd revision at
/// least as recent as the applied one.
pub fn decide(applied: Option<Version>, incoming: Version) -> Decision {
    let Some(cur) = applied else {
        return Decision::Apply;
    };
    if incoming.epoch == cur.epoch {
        match incoming.generation.cmp(&cur.generation) {
            std::cmp::Ordering::Greater => Decision::Apply,
            std::cmp::Ordering::Equal => Decision::AlreadyApplied,
            std::cmp::Ordering::Less => Decision::Refuse(format!(
                "snapshot {incoming} is older than the applied {cur} (lower generation)"
            )),
        }
    } else if incoming.etcd_revision >= cur.etcd_revision {
        Decision::Apply
    } else {
        Decision::Refuse(format!(
            "snapshot {incoming} was built from an older etcd revision than the applied {cur}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(epoch: u64, generation: u64, etcd_revision: i64) -> Version {
        Version {
            epoch,
            generation,
            etcd_revision,
        }
    }

    #[test]
    fn first_snapshot_is_applied() {
        assert_eq!(decide(None, v(1, 1, 1)), Decision::Apply);
    }

    #[test]
    fn same_epoch_orders_by_generation() {
        assert_eq!(decide(Some(v(5, 3, 10)), v(5, 4, 9)), Decision::Apply);
        assert_eq!(
            decide(Some(v(5, 3, 10)), v(5, 3, 10)),
            Decision::AlreadyApplied
        );
        let Decision::Refuse(why) = decide(Some(v(5, 3, 10)), v(5, 2, 11)) else {
            panic!("older generation must be refused");
        };
        assert!(
            why.contains("generation 2") && why.contains("generation 3"),
            "{why}"
        );
    }

    #[test]
    fn new_epoch_orders_by_etcd_revision() {
        assert_eq!(decide(Some(v(5, 9, 10)), v(6, 1, 10)), Decision::Apply);
        assert_eq!(decide(Some(v(5, 9, 10)), v(4, 1, 11)), Decision::Apply);
        let Decision::Refuse(why) = decide(Some(v(5, 9, 10)), v(6, 1, 9)) else {
            panic!("older etcd revision must be refused");
        };
        assert!(
            why.contains("etcd revision 9") && why.contains("etcd revision 10"),
            "{why}"
        );
    }
}
