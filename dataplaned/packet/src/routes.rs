//! The route table the packet loop looks up, built once per snapshot.
//!
//! Forward: inner destination → the peer's PublicIP, longest prefix first (in
//! practice every lease has the same length, so this is one hash lookup).
//! Reverse: a datagram's sender PublicIP → the subnets that host holds, for the
//! receive check. Lookups never allocate.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// (prefix length, network address → PublicIP), longest prefix first.
    by_len: Vec<(u8, HashMap<u32, Ipv4Addr>)>,
    /// PublicIP → subnets that host holds (usually exactly one).
    by_peer: HashMap<Ipv4Addr, Vec<Ipv4Net>>,
    len: usize,
}

impl RouteTable {
    /// The table of the peers' (subnet, PublicIP) pairs.
    pub fn new(routes: impl IntoIterator<Item = (Ipv4Net, Ipv4Addr)>) -> Self {
        let mut by_len: Vec<(u8, HashMap<u32, Ipv4Addr>)> = Vec::new();
        let mut by_peer: HashMap<Ipv4Addr, Vec<Ipv4Net>> = HashMap::new();
        let mut count = 0;
        for (subnet, public_ip) in routes {
            count += 1;
            let subnet = subnet.trunc();
            let len = subnet.prefix_len();
            let map = match by_len.iter_mut().find(|(l, _)| *l == len) {
                Some((_, m)) => m,
                None => {
                    by_len.push((len, HashMap::new()));
                    &mut by_len.last_mut().expect("just pushed").1
                }
            };
            map.insert(u32::from(subnet.network()), public_ip);
            by_peer.entry(public_ip).or_default().push(subnet);
        }
        by_len.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        RouteTable {
            by_len,
            by_peer,
            len: count,
        }
    }

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
        let d = u32::from(dst);
        self.by_len.iter().find_map(|(len, map)| {
            let mask = if *len == 0 { 0 } else { u32::MAX << (32 - len) };
            map.get(&(d & mask)).copied()
        })
    }

    /// The subnets held by the host at `public_ip`, None for a non-member.
    #[inline]
    pub fn subnets_of(&self, public_ip: Ipv4Addr) -> Option<&[Ipv4Net]> {
        self.by_peer.get(&public_ip).map(Vec::as_slice)
    }

    /// Whether `src` may appear as the inner source of a datagram from `sender`:
    /// None when the sender is not a member, else whether one of its subnets
    /// holds `src`.
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

    #[test]
    fn empty_table() {
        let t = RouteTable::new([]);
        assert!(t.is_empty());
        assert_eq!(t.lookup(ip("10.50.7.1")), None);
    }
}
