//! Subnet keys and candidate selection, pure.
//!
//! A lease's etcd key ends in `<a.b.c.d>-<len>` (flannel's spelling). A subnet
//! is free when no lease or reservation overlaps it; among the free ones between
//! SubnetMin and SubnetMax one is picked at random, so hosts starting together
//! rarely race for the same key.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rand::Rng;

use crate::model::config::NetConfig;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subnet key {0:?} is not of the form a.b.c.d-len")]
pub struct KeyError(pub String);

/// `10.50.18.0/24` → `10.50.18.0-24`.
pub fn key_name(subnet: Ipv4Net) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix_len())
}

/// `10.50.18.0-24` → `10.50.18.0/24`. Rejects anything else, including host
/// bits set (`10.50.18.1-24`), which no honest writer produces.
pub fn parse_key(name: &str) -> Result<Ipv4Net, KeyError> {
    let bad = || KeyError(crate::model::text::shown(name));
    let (addr, len) = name.rsplit_once('-').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    // One spelling per subnet: no sign, no leading zero ("10.0.0.0-08" would
    // be a second key for 10.0.0.0/8, and two keys could lease one subnet).
    let canonical = len == "0" || !len.starts_with('0');
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 2 || !canonical {
        return Err(bad());
    }
    let len: u8 = len.parse().map_err(|_| bad())?;
    let net = Ipv4Net::new(addr, len).map_err(|_| bad())?;
    if net.network() != addr {
        return Err(bad());
    }
    Ok(net)
}

/// Whether two subnets share any address.
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// How many subnets lie between SubnetMin and SubnetMax, inclusive.
pub fn candidate_count(cfg: &NetConfig) -> u64 {
    let step = 1u64 << (32 - u32::from(cfg.subnet_len));
    let lo = u64::from(u32::from(cfg.subnet_min.network()));
    let hi = u64::from(u32::from(cfg.subnet_max.network()));
    (hi - lo) / step + 1
}

/// The `i`-th candidate, counting from SubnetMin.
pub fn candidate(cfg: &NetConfig, i: u64) -> Ipv4Net {
    let step = 1u64 << (32 - u32::from(cfg.subnet_len));
    let lo = u64::from(u32::from(cfg.subnet_min.network()));
    Ipv4Net::new(Ipv4Addr::from((lo + i * step) as u32), cfg.subnet_len).expect("valid len")
}

/// Every candidate, SubnetMin..=SubnetMax, in order.
pub fn candidates(cfg: &NetConfig) -> impl Iterator<Item = Ipv4Net> + '_ {
    (0..candidate_count(cfg)).map(move |i| candidate(cfg, i))
}

/// Candidates no taken subnet (lease or reservation) overlaps.
pub fn free_candidates<'a>(
    cfg: &'a NetConfig,
    taken: &'a [Ipv4Net],
) -> impl Iterator<Item = Ipv4Net> + 'a {
    candidates(cfg).filter(move |c| !taken.iter().any(|t| overlaps(*c, *t)))
}

/// Above this many candidates, picking samples instead of listing them all
/// (a /8 cut into /30s has four million).
const ENUMERATE_LIMIT: u64 = 1 << 16;

/// Picks a free candidate at random, or `None` when every one is taken.
pub fn pick_free<R: Rng + ?Sized>(
    cfg: &NetConfig,
    taken: &[Ipv4Net],
    rng: &mut R,
) -> Option<Ipv4Net> {
    let count = candidate_count(cfg);
    let is_free = |c: &Ipv4Net| !taken.iter().any(|t| overlaps(*c, *t));
    if count <= ENUMERATE_LIMIT {
        let free: Vec<Ipv4Net> = free_candidates(cfg, taken).collect();
        if free.is_empty() {
            return None;
        }
        return Some(free[rng.random_range(0..free.len())]);
    }
    // Huge ranges are mostly free: a few random probes almost always hit, and
    // a scan from a random start settles the rare remainder.
    for _ in 0..64 {
        let c = candidate(cfg, rng.random_range(0..count));
        if is_free(&c) {
            return Some(c);
        }
    }
    let start = rng.random_range(0..count);
    (0..count)
        .map(|i| candidate(cfg, (start + i) % count))
        .find(is_free)
}

/// The address a host's bridge takes in its subnet (`KOLACH_SUBNET`):
/// the first one after the network address.
pub fn first_host(subnet: Ipv4Net) -> Ipv4Net {
    let addr = Ipv4Addr::from(u32::from(subnet.network()) + 1);
    Ipv4Net::new(addr, subnet.prefix_len()).expect("same len")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn cfg(json: &str) -> NetConfig {
        config::parse(json.as_bytes()).unwrap().config
    }

    #[test]
    fn key_roundtrip_and_garbage() {
        assert_eq!(key_name(net("10.50.18.0/24")), "10.50.18.0-24");
        assert_eq!(parse_key("10.50.18.0-24").unwrap(), net("10.50.18.0/24"));
        assert_eq!(parse_key("10.50.18.64-26").unwrap(), net("10.50.18.64/26"));
        assert_eq!(parse_key("10.0.0.0-8").unwrap(), net("10.0.0.0/8"));
        assert_eq!(parse_key("0.0.0.0-0").unwrap(), net("0.0.0.0/0"));
        for bad in [
            "",
            "10.50.18.0",
            "10.50.18.0-",
            "10.50.18.0-33",
            "10.50.18.1-24",
            "10.50.18.0-+24",
            "10.50.18.0-024",
            "10.0.0.0-08",
            "0.0.0.0-00",
            "fd00::-64",
            "garbage-24",
            "10.50.18.0/24",
        ] {
            assert!(parse_key(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn candidates_respect_min_and_max() {
        let c =
            cfg(r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.4.0","SubnetMax":"10.50.6.0"}"#);
        let all: Vec<_> = candidates(&c).collect();
        assert_eq!(
            all,
            vec![
                net("10.50.4.0/24"),
                net("10.50.5.0/24"),
                net("10.50.6.0/24")
            ]
        );
        let d = cfg(r#"{"Network":"10.50.0.0/16"}"#);
        assert_eq!(candidate_count(&d), 255);
        assert_eq!(candidates(&d).next(), Some(net("10.50.1.0/24")));
        assert_eq!(candidates(&d).last(), Some(net("10.50.255.0/24")));
    }

    #[test]
    fn leases_and_reservations_are_excluded_by_overlap() {
        let c = cfg(
            r#"{"Network":"10.50.0.0/16","SubnetLen":25,"SubnetMin":"10.50.4.0","SubnetMax":"10.50.6.0"}"#,
        );
        // A /24 lease from an older SubnetLen covers two /25 candidates; a
        // reservation takes a third.
        let taken = [net("10.50.4.0/24"), net("10.50.5.128/25")];
        let free: Vec<_> = free_candidates(&c, &taken).collect();
        assert_eq!(free, vec![net("10.50.5.0/25"), net("10.50.6.0/25")]);
    }

    #[test]
    fn pick_is_random_among_free_and_none_when_full() {
        let c =
            cfg(r#"{"Network":"10.50.0.0/16","SubnetMin":"10.50.4.0","SubnetMax":"10.50.7.0"}"#);
        let taken = [net("10.50.5.0/24")];
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let p = pick_free(&c, &taken, &mut rng).unwrap();
            assert!(c.allows(p));
            assert_ne!(p, net("10.50.5.0/24"));
            seen.insert(p);
        }
        assert_eq!(seen.len(), 3, "all free candidates get picked: {seen:?}");
        let full = [net("10.50.0.0/16")];
        assert_eq!(pick_free(&c, &full, &mut rng), None);
    }

    #[test]
    fn pick_in_a_huge_range_samples() {
        let c = cfg(r#"{"Network":"10.0.0.0/8","SubnetLen":30}"#);
        assert!(candidate_count(&c) > ENUMERATE_LIMIT);
        let mut rng = StdRng::seed_from_u64(1);
        let p = pick_free(&c, &[], &mut rng).unwrap();
        assert!(c.allows(p));
        // Only one free /30 left in the range: the fallback scan finds it.
        let c2 = cfg(
            r#"{"Network":"10.0.0.0/8","SubnetLen":30,"SubnetMin":"10.0.0.4","SubnetMax":"10.4.0.0"}"#,
        );
        let taken = [net("10.0.0.0/14"), net("10.4.0.0/30")];
        assert_eq!(pick_free(&c2, &taken, &mut rng), None);
        let taken = [
            net("10.1.0.0/16"),
            net("10.2.0.0/15"),
            net("10.0.0.8/29"),
            net("10.0.0.16/28"),
            net("10.0.0.32/27"),
            net("10.0.0.64/26"),
            net("10.0.0.128/25"),
            net("10.0.1.0/24"),
            net("10.0.2.0/23"),
            net("10.0.4.0/22"),
            net("10.0.8.0/21"),
            net("10.0.16.0/20"),
            net("10.0.32.0/19"),
            net("10.0.64.0/18"),
            net("10.0.128.0/17"),
            net("10.4.0.0/30"),
        ];
        assert_eq!(pick_free(&c2, &taken, &mut rng), Some(net("10.0.0.4/30")));
    }

    #[test]
    fn first_host_is_dot_one() {
        assert_eq!(first_host(net("10.50.18.0/24")), net("10.50.18.1/24"));
    }
}
