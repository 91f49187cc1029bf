//! This host's allocations, pure: who holds which address, and which address
//! to hand out next.
//!
//! Allocations are keyed by (container ID, ifname), the pair every CNI call
//! names, so a repeated ADD finds its address and an upgrade of anything can
//! never orphan one (neco#261). Each range (the default pool's subnet, or a
//! block) hands out addresses in order from a cursor that only moves forward
//! and wraps: a freed address comes back only after every other free one
//! has been handed out (no immediate reuse).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The pair the runtime names in every CNI call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

impl std::fmt::Display for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub attachment: Attachment,
    pub address: Ipv4Addr,
    pub pool: String,
    /// The range it came from: the host's subnet or a block.
    pub block: Ipv4Net,
    pub network: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub netns: String,
    pub allocated_at_unix: i64,
}

/// The addresses of a range that may be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub block: Ipv4Net,
    first: u32,
    last: u32,
}

impl Range {
    /// A pool block: every address.
    pub fn block(block: Ipv4Net) -> Range {
        Range {
            block,
            first: u32::from(block.network()),
            last: u32::from(block.broadcast()),
        }
    }

    /// The default pool: the host's subnet less `.0` (the kolach device),
    /// `.1` (KOLACH_SUBNET, Docker's bridge) and the last address.
    pub fn host_subnet(subnet: Ipv4Net) -> Range {
        let net = u32::from(subnet.network());
        let last = u32::from(subnet.broadcast());
        Range {
            block: subnet,
            first: net.saturating_add(2).min(last),
            last: last.saturating_sub(1).max(net),
        }
    }

    pub fn size(&self) -> u32 {
        if self.last < self.first {
            0
        } else {
            self.last - self.first + 1
        }
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(a))
    }
}

#[derive(Debug, Default)]
pub struct Allocations {
    by_attachment: HashMap<Attachment, Ipv4Addr>,
    by_address: BTreeMap<Ipv4Addr, Allocation>,
    /// The address handed out last in each range.
    cursors: BTreeMap<Ipv4Net, Ipv4Addr>,
}

impl Allocations {
    pub fn get(&self, a: &Attachment) -> Option<&Allocation> {
        self.by_attachment
            .get(a)
            .and_then(|ip| self.by_address.get(ip))
    }

    pub fn by_address(&self, ip: Ipv4Addr) -> Option<&Allocation> {
        self.by_address.get(&ip)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Allocation> {
        self.by_address.values()
    }

    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }

    /// Addresses in use inside `block`.
    pub fn in_use(&self, block: Ipv4Net) -> usize {
        self.by_address
            .range(block.network()..=block.broadcast())
            .count()
    }

    pub fn cursors(&self) -> &BTreeMap<Ipv4Net, Ipv4Addr> {
        &self.cursors
    }

    pub fn set_cursor(&mut self, block: Ipv4Net, at: Ipv4Addr) {
        self.cursors.insert(block, at);
    }

    /// The next free address of `range`: the first free one after the
    /// range's cursor, wrapping around. None when the range is full.
    pub fn next_free(&self, range: &Range) -> Option<Ipv4Addr> {
        let size = range.size();
        if size == 0 {
            return None;
        }
        let start = match self.cursors.get(&range.block) {
            Some(c) if range.contains(*c) => u32::from(*c) - range.first + 1,
            _ => 0,
        };
        (0..size)
            .map(|i| Ipv4Addr::from(range.first + (start + i) % size))
            .find(|a| !self.by_address.contains_key(a))
    }

    /// Records an allocation (its address must be free, its attachment new)
    /// and moves its range's cursor to it.
    pub fn insert(&mut self, a: Allocation) {
        debug_assert!(!self.by_address.contains_key(&a.address));
        debug_assert!(!self.by_attachment.contains_key(&a.attachment));
        self.cursors.insert(a.block, a.address);
        self.by_attachment.insert(a.attachment.clone(), a.address);
        self.by_address.insert(a.address, a);
    }

    /// Restores an allocation read back from disk without moving a cursor;
    /// returns the allocation it displaced (a corrupt store), if any.
    pub fn restore(&mut self, a: Allocation) -> Option<Allocation> {
        let old = self.by_address.remove(&a.address);
        if let Some(o) = &old {
            self.by_attachment.remove(&o.attachment);
        }
        if let Some(ip) = self.by_attachment.insert(a.attachment.clone(), a.address) {
            self.by_address.remove(&ip);
        }
        self.by_address.insert(a.address, a);
        old
    }

    pub fn remove(&mut self, a: &Attachment) -> Option<Allocation> {
        let ip = self.by_attachment.remove(a)?;
        self.by_address.remove(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn att(c: &str, i: &str) -> Attachment {
        Attachment {
            container_id: c.into(),
            ifname: i.into(),
        }
    }

    fn alloc(t: &mut Allocations, r: &Range, c: &str) -> Ipv4Addr {
        let address = t.next_free(r).expect("a free address");
        t.insert(Allocation {
            attachment: att(c, "eth0"),
            address,
            pool: "p".into(),
            block: r.block,
            network: "kolach".into(),
            pod_namespace: String::new(),
            pod_name: String::new(),
            netns: String::new(),
            allocated_at_unix: 0,
        });
        address
    }

    #[test]
    fn the_host_subnet_leaves_out_device_bridge_and_last() {
        let r = Range::host_subnet(net("10.50.18.0/24"));
        assert_eq!(r.size(), 253);
        assert!(!r.contains("10.50.18.0".parse().unwrap()));
        assert!(!r.contains("10.50.18.1".parse().unwrap()));
        assert!(r.contains("10.50.18.2".parse().unwrap()));
        assert!(r.contains("10.50.18.254".parse().unwrap()));
        assert!(!r.contains("10.50.18.255".parse().unwrap()));
        // A /30 subnet has one address for pods.
        assert_eq!(Range::host_subnet(net("10.50.18.0/30")).size(), 1);
        assert_eq!(Range::block(net("203.0.113.16/28")).size(), 16);
    }

    #[test]
    fn addresses_go_out_in_order_and_a_freed_one_comes_back_last() {
        let r = Range::host_subnet(net("10.50.18.0/29")); // .2 ..= .6
        let mut t = Allocations::default();
        let got: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|c| alloc(&mut t, &r, c))
            .collect();
        assert_eq!(
            got,
            ["10.50.18.2", "10.50.18.3", "10.50.18.4"].map(|s| s.parse::<Ipv4Addr>().unwrap())
        );
        // b leaves: its .3 is not handed out while .5 and .6 are free.
        assert_eq!(
            t.remove(&att("b", "eth0")).unwrap().address.to_string(),
            "10.50.18.3"
        );
        assert_eq!(alloc(&mut t, &r, "d").to_string(), "10.50.18.5");
        assert_eq!(alloc(&mut t, &r, "e").to_string(), "10.50.18.6");
        // Wrapped: now .3 is the only free one.
        assert_eq!(alloc(&mut t, &r, "f").to_string(), "10.50.18.3");
        assert_eq!(t.next_free(&r), None);
        assert_eq!(t.in_use(r.block), 5);
    }

    #[test]
    fn one_address_per_attachment() {
        let r = Range::block(net("203.0.113.0/30"));
        let mut t = Allocations::default();
        let a = alloc(&mut t, &r, "x");
        assert_eq!(t.get(&att("x", "eth0")).unwrap().address, a);
        assert!(t.get(&att("x", "eth1")).is_none());
        assert!(t.remove(&att("nobody", "eth0")).is_none());
        // Restoring a record that claims a used address keeps one owner.
        let mut dup = t.get(&att("x", "eth0")).unwrap().clone();
        dup.attachment = att("y", "eth0");
        assert!(t.restore(dup).is_some());
        assert!(t.get(&att("x", "eth0")).is_none());
        assert_eq!(t.get(&att("y", "eth0")).unwrap().address, a);
        assert_eq!(t.len(), 1);
    }
}
