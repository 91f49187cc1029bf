//! The route table the packet loop looks up, built once per snapshot.
//!
//! Forward: inner destination → the peer's PublicIP, longest prefix first (in
//! practice every lease has the same length, so this is one hash lookup).
//! Peers' pool blocks (DESIGN §10) lie outside the Network, so they have a
//! table of their own, consulted only for destinations outside it: the
//! lookup of an overlay address costs what it did before blocks.
//! Reverse: a datagram's sender PublicIP → the prefixes that host holds
//! (its subnets first, then its blocks), for the receive check. Lookups never
//! allocate.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Prefixes → PublicIP, by prefix length, longest first.
#[derive(Debug, Default, Clone)]
struct Prefixes {
    by_len: Vec<(u8, HashMap<u32, Ipv4Addr>)>,
}

impl Prefixes {
    fn insert(&mut self, net: Ipv4Net, public_ip: Ipv4Addr) {
        let len = net.prefix_len();
        let map = match self.by_len.iter_mut().position(|(l, _)| *l == len) {
            Some(i) => &mut self.by_len[i].1,
            None => {
                // Kept sorted as it grows: longest prefix first.
                let at = self.by_len.partition_point(|(l, _)| *l > len);
                self.by_len.insert(at, (len, HashMap::new()));
                &mut self.by_len[at].1
            }
        };
        map.insert(u32::from(net.network()), public_ip);
    }

    #[inline]
    fn lookup(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        let d = u32::from(dst);
        self.by_len.iter().find_map(|(len, map)| {
            let mask = if *len == 0 { 0 } else { u32::MAX << (32 - len) };
            map.get(&(d & mask)).copied()
        })
    }
}

#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// The peers' subnets.
    subnets: Prefixes,
    /// The peers' pool blocks.
    blocks: Prefixes,
    /// PublicIP → prefixes that host holds: its subnets (usually exactly
    /// one), then its blocks.
    by_peer: HashMap<Ipv4Addr, Vec<Ipv4Net>>,
    len: usize,
}

impl RouteTable {
    /// The table of the peers' (subnet, PublicIP) pairs.
    pub fn new(routes: impl IntoIterator<Item = (Ipv4Net, Ipv4Addr)>) -> Self {
        let mut t = RouteTable::default();
        for (subnet, public_ip) in routes {
            t.len += 1;
            let subnet = subnet.trunc();
            t.subnets.insert(subnet, public_ip);
            t.by_peer.entry(public_ip).or_default().push(subnet);
        }
        t
    }

    /// Adds the peers' pool blocks as (block, PublicIP of the peer holding
    /// it), routed like that peer's subnet. A block of a PublicIP without a
    /// subnet makes that host a member too (the snapshot never has one).
    pub fn with_blocks(mut self, blocks: impl IntoIterator<Item = (Ipv4Net, Ipv4Addr)>) -> Self {
        for (block, public_ip) in blocks {
            let block = block.trunc();
            self.blocks.insert(block, public_ip);
            self.by_peer.entry(public_ip).or_default().push(block);
        }
        self
    }

    /// Routes (peer subnets), blocks not counted.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The PublicIP of the peer whose subnet holds `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        self.subnets.lookup(dst)
    }

    /// The PublicIP of the peer one of whose blocks holds `dst`.
    #[inline]
    pub fn lookup_block(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        self.blocks.lookup(dst)
    }

    /// The prefixes (subnets, then blocks) held by the host at `public_ip`,
    /// None for a non-member.
    #[inline]
    pub fn subnets_of(&self, public_ip: Ipv4Addr) -> Option<&[Ipv4Net]> {
        self.by_peer.get(&public_ip).map(Vec::as_slice)
    }

    /// Whether `src` may appear as the inner source of a datagram from `sender`:
    /// None when the sender is not a member, else whether one of its subnets
    /// or blocks holds `src`.
    #[inline]
    pub fn sender_may_use(&self, sender: Ipv4Addr, src: Ipv4Addr) -> Option<bool> {
        self.subnets_of(sender)
            .map(|nets| nets.iter().any(|n| n.contains(&src)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(subnet: &str, ip: &str) -> (Ipv4Net, Ipv4Addr) {
        (subnet.parse().unwrap(), ip.parse().unwrap())
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn lookup_by_subnet() {
        let t = RouteTable::new([
            r("10.50.7.0/24", "198.18.0.2"),
            r("10.50.9.0/24", "198.18.0.3"),
        ]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(ip("10.50.7.1")), Some(ip("198.18.0.2")));
        assert_eq!(t.lookup(ip("10.50.7.255")), Some(ip("198.18.0.2")));
        assert_eq!(t.lookup(ip("10.50.9.0")), Some(ip("198.18.0.3")));
        assert_eq!(t.lookup(ip("10.50.8.1")), None);
        assert_eq!(t.lookup(ip("10.51.7.1")), None);
    }

    #[test]
    fn longest_prefix_wins_across_lengths() {
        let t = RouteTable::new([
            r("10.50.0.0/20", "198.18.0.2"),
            r("10.50.4.0/26", "198.18.0.4"),
            r("10.50.4.0/24", "198.18.0.3"),
        ]);
        assert_eq!(t.lookup(ip("10.50.4.10")), Some(ip("198.18.0.4")));
        assert_eq!(t.lookup(ip("10.50.4.100")), Some(ip("198.18.0.3")));
        assert_eq!(t.lookup(ip("10.50.5.1")), Some(ip("198.18.0.2")));
        assert_eq!(t.lookup(ip("10.50.16.1")), None);
    }

    #[test]
    fn host_bits_in_a_route_are_ignored() {
        let t = RouteTable::new([r("10.50.7.9/24", "198.18.0.2")]);
        assert_eq!(t.lookup(ip("10.50.7.200")), Some(ip("198.18.0.2")));
    }

    #[test]
    fn reverse_check() {
        let t = RouteTable::new([
            r("10.50.7.0/24", "198.18.0.2"),
            r("10.50.8.0/24", "198.18.0.2"),
            r("10.50.9.0/24", "198.18.0.3"),
        ]);
        assert_eq!(t.subnets_of(ip("198.18.0.2")).unwrap().len(), 2);
        assert_eq!(
            t.sender_may_use(ip("198.18.0.2"), ip("10.50.8.4")),
            Some(true)
        );
        assert_eq!(
            t.sender_may_use(ip("198.18.0.2"), ip("10.50.9.4")),
            Some(false)
        );
        assert_eq!(t.sender_may_use(ip("198.18.0.99"), ip("10.50.9.4")), None);
    }

    /// B (10.50.7.0/24 and two blocks) and C (10.50.9.0/24 and one block).
    fn with_blocks() -> RouteTable {
        RouteTable::new([
            r("10.50.7.0/24", "198.18.0.2"),
            r("10.50.9.0/24", "198.18.0.3"),
        ])
        .with_blocks([
            r("203.0.113.16/28", "198.18.0.2"),
            r("198.51.100.0/26", "198.18.0.2"),
            r("203.0.113.32/28", "198.18.0.3"),
        ])
    }

    #[test]
    fn blocks_route_to_their_holder_and_only_outside_the_subnets() {
        let t = with_blocks();
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup_block(ip("203.0.113.17")), Some(ip("198.18.0.2")));
        assert_eq!(t.lookup_block(ip("203.0.113.31")), Some(ip("198.18.0.2")));
        assert_eq!(t.lookup_block(ip("198.51.100.63")), Some(ip("198.18.0.2")));
        assert_eq!(t.lookup_block(ip("203.0.113.32")), Some(ip("198.18.0.3")));
        assert_eq!(t.lookup_block(ip("203.0.113.48")), None);
        assert_eq!(t.lookup_block(ip("10.50.7.1")), None);
        // Blocks are not subnets: the overlay lookup does not see them.
        assert_eq!(t.lookup(ip("203.0.113.17")), None);
        assert_eq!(t.lookup(ip("10.50.7.1")), Some(ip("198.18.0.2")));
    }

    #[test]
    fn reverse_check_with_blocks() {
        let t = with_blocks();
        assert_eq!(
            t.subnets_of(ip("198.18.0.2")).unwrap(),
            [
                "10.50.7.0/24".parse::<Ipv4Net>().unwrap(),
                "203.0.113.16/28".parse().unwrap(),
                "198.51.100.0/26".parse().unwrap(),
            ]
        );
        let may = |sender, src| t.sender_may_use(ip(sender), ip(src));
        // The sender's own subnet and blocks.
        assert_eq!(may("198.18.0.2", "10.50.7.4"), Some(true));
        assert_eq!(may("198.18.0.2", "203.0.113.20"), Some(true));
        assert_eq!(may("198.18.0.2", "198.51.100.9"), Some(true));
        // Another peer's block, and an address nobody holds.
        assert_eq!(may("198.18.0.2", "203.0.113.33"), Some(false));
        assert_eq!(may("198.18.0.3", "203.0.113.20"), Some(false));
        assert_eq!(may("198.18.0.2", "192.0.2.1"), Some(false));
        assert_eq!(may("198.18.0.99", "203.0.113.20"), None);
    }

    #[test]
    fn empty_table() {
        let t = RouteTable::new([]);
        assert!(t.is_empty());
        assert_eq!(t.lookup(ip("10.50.7.1")), None);
    }
}
