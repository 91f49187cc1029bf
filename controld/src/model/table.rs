//! The lease table: every key under `<prefix>/subnets/` as the peer watch saw
//! it, pure.
//!
//! Events are applied per key only when newer than what the table holds, so a
//! lease this host just wrote (and recorded at once) is not undone by an older
//! event the watch delivers later. Keys whose value is garbage are kept aside:
//! logged once, never routed to, but their subnet still counts as taken.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;

use crate::model::lease::Lease;

/// A key that does not hold a usable lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garbage {
    pub key: String,
    /// The subnet the key names, when the key itself parses.
    pub subnet: Option<Ipv4Net>,
    pub error: String,
    pub mod_revision: i64,
}

/// A listing of `<prefix>/subnets/` at one revision: the table's input at
/// start and after a compaction ([`LeaseTable::replace`]).
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub leases: Vec<Lease>,
    pub garbage: Vec<Garbage>,
    pub revision: i64,
}

/// One change seen by the subnet watch: the table's input in between.
#[derive(Debug, Clone)]
pub enum SubnetEvent {
    Put(Lease),
    Deleted { subnet: Ipv4Net, revision: i64 },
    Garbage(Garbage),
    GarbageDeleted { key: String, revision: i64 },
}

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(Lease),
    Updated {
        old: Lease,
        new: Lease,
    },
    Removed(Lease),
    /// The event was older than what the table holds, or changed nothing.
    Unchanged,
}

#[derive(Debug, Clone, Default)]
pub struct LeaseTable {
    leases: BTreeMap<Ipv4Net, Lease>,
    garbage: BTreeMap<String, Garbage>,
    revision: i64,
}

impl LeaseTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The etcd revision the table reflects.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn observe_revision(&mut self, revision: i64) {
        self.revision = self.revision.max(revision);
    }

    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    pub fn get(&self, subnet: &Ipv4Net) -> Option<&Lease> {
        self.leases.get(subnet)
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Every subnet a new claim must stay clear of: leases, reservations and
    /// keys with unreadable values.
    pub fn taken(&self) -> Vec<Ipv4Net> {
        self.leases
            .keys()
            .copied()
            .chain(self.garbage.values().filter_map(|g| g.subnet))
            .collect()
    }

    /// Replaces the whole table with a fresh listing and returns what differs
    /// (the re-list after a compacted watch must not miss a delete).
    pub fn replace(
        &mut self,
        leases: Vec<Lease>,
        garbage: Vec<Garbage>,
        revision: i64,
    ) -> Vec<Change> {
        let new: BTreeMap<Ipv4Net, Lease> = leases.into_iter().map(|l| (l.subnet, l)).collect();
        let mut changes = Vec::new();
        for (subnet, old) in &self.leases {
            match new.get(subnet) {
                None => changes.push(Change::Removed(old.clone())),
                Some(n) if n != old => changes.push(Change::Updated {
                    old: old.clone(),
                    new: n.clone(),
                }),
                Some(_) => {}
            }
        }
        for (subnet, l) in &new {
            if !self.leases.contains_key(subnet) {
                changes.push(Change::Added(l.clone()));
            }
        }
        self.leases = new;
        self.garbage = garbage.into_iter().map(|g| (g.key.clone(), g)).collect();
        self.revision = revision;
        changes
    }

    /// Applies a put; ignored when the table already holds this key at the
    /// same or a newer revision.
    pub fn put(&mut self, lease: Lease) -> Change {
        self.revision = self.revision.max(lease.mod_revision);
        self.garbage.retain(|_, g| g.subnet != Some(lease.subnet));
        match self.leases.get(&lease.subnet) {
            Some(old) if old.mod_revision >= lease.mod_revision => Change::Unchanged,
            Some(old) => {
                let old = old.clone();
                self.leases.insert(lease.subnet, lease.clone());
                Change::Updated { old, new: lease }
            }
            None => {
                self.leases.insert(lease.subnet, lease.clone());
                Change::Added(lease)
            }
        }
    }

    /// Records a lease this host just wrote. Unlike [`Self::put`] it does not
    /// advance the table's revision: events before that write may still be
    /// on their way through the watch.
    pub fn put_own(&mut self, lease: Lease) -> Change {
        let revision = self.revision;
        let change = self.put(lease);
        self.revision = revision;
        change
    }

    /// Applies a delete at `revision`; ignored when the table's entry is newer.
    pub fn delete(&mut self, subnet: Ipv4Net, revision: i64) -> Change {
        self.revision = self.revision.max(revision);
        self.garbage
            .retain(|_, g| g.subnet != Some(subnet) || g.mod_revision >= revision);
        match self.leases.get(&subnet) {
            Some(old) if old.mod_revision < revision => {
                Change::Removed(self.leases.remove(&subnet).expect("present"))
            }
            _ => Change::Unchanged,
        }
    }

    /// Records a garbage value; true when it is new (so it gets logged once).
    pub fn note_garbage(&mut self, g: Garbage) -> bool {
        self.revision = self.revision.max(g.mod_revision);
        if let Some(subnet) = g.subnet {
            if self
                .leases
                .get(&subnet)
                .is_some_and(|l| l.mod_revision < g.mod_revision)
            {
                self.leases.remove(&subnet);
            }
        }
        let fresh = self
            .garbage
            .get(&g.key)
            .is_none_or(|old| old.error != g.error);
        self.garbage.insert(g.key.clone(), g);
        fresh
    }

    /// A delete of a key whose name does not parse as a subnet.
    pub fn forget_garbage(&mut self, key: &str, revision: i64) {
        self.revision = self.revision.max(revision);
        self.garbage.remove(key);
    }

    pub fn garbage(&self) -> impl Iterator<Item = &Garbage> {
        self.garbage.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lease::LeaseAttrs;

    fn lease(subnet: &str, ip: &str, rev: i64) -> Lease {
        Lease {
            subnet: subnet.parse().unwrap(),
            attrs: LeaseAttrs::new(ip.parse().unwrap(), "udp"),
            value: LeaseAttrs::new(ip.parse().unwrap(), "udp").to_json(),
            lease_id: 7,
            mod_revision: rev,
            create_revision: rev,
        }
    }

    #[test]
    fn older_events_do_not_undo_newer_state() {
        let mut t = LeaseTable::new();
        assert!(matches!(
            t.put(lease("10.50.1.0/24", "198.18.0.1", 10)),
            Change::Added(_)
        ));
        // A delete from before the put (delivered late) is ignored.
        assert_eq!(
            t.delete("10.50.1.0/24".parse().unwrap(), 8),
            Change::Unchanged
        );
        assert_eq!(
            t.put(lease("10.50.1.0/24", "198.18.0.1", 9)),
            Change::Unchanged
        );
        assert!(matches!(
            t.put(lease("10.50.1.0/24", "198.18.0.9", 11)),
            Change::Updated { .. }
        ));
        assert!(matches!(
            t.delete("10.50.1.0/24".parse().unwrap(), 12),
            Change::Removed(_)
        ));
        assert!(t.is_empty());
        assert_eq!(t.revision(), 12);
    }

    #[test]
    fn replace_reports_removed_and_updated() {
        let mut t = LeaseTable::new();
        t.put(lease("10.50.1.0/24", "198.18.0.1", 3));
        t.put(lease("10.50.2.0/24", "198.18.0.2", 4));
        let changes = t.replace(
            vec![
                lease("10.50.2.0/24", "198.18.0.7", 20),
                lease("10.50.3.0/24", "198.18.0.3", 21),
            ],
            vec![],
            30,
        );
        assert!(changes
            .iter()
            .any(|c| matches!(c, Change::Removed(l) if l.subnet.to_string() == "10.50.1.0/24")));
        assert!(changes.iter().any(|c| matches!(c, Change::Updated { new, .. } if new.attrs.public_ip.to_string() == "198.18.0.7")));
        assert!(changes
            .iter()
            .any(|c| matches!(c, Change::Added(l) if l.subnet.to_string() == "10.50.3.0/24")));
        assert_eq!(changes.len(), 3);
        assert_eq!(t.len(), 2);
        assert_eq!(t.revision(), 30);
    }

    #[test]
    fn garbage_is_taken_and_logged_once() {
        let mut t = LeaseTable::new();
        let g = Garbage {
            key: "10.50.9.0-24".into(),
            subnet: Some("10.50.9.0/24".parse().unwrap()),
            error: "lease value has no PublicIP".into(),
            mod_revision: 5,
        };
        assert!(t.note_garbage(g.clone()));
        assert!(!t.note_garbage(Garbage {
            mod_revision: 6,
            ..g.clone()
        }));
        assert_eq!(t.taken(), vec!["10.50.9.0/24".parse::<Ipv4Net>().unwrap()]);
        // A valid put at that key replaces the garbage.
        t.put(lease("10.50.9.0/24", "198.18.0.9", 7));
        assert_eq!(t.garbage().count(), 0);
        assert_eq!(t.taken().len(), 1);
    }
}
