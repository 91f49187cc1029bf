//! A pool key and value as etcd may hold them (`<prefix>/pools/<name>`): any
//! bytes, name and value split at the first NUL. Parsing never panics, an
//! accepted spec keeps DESIGN §10's rules and survives our own round trip,
//! and the set of pools the watch keeps never holds two overlapping ones
//! whatever is put into it.
#![no_main]

use ipnet::Ipv4Net;
use kolach_controld::ipam::pool::{PoolSet, PoolSpec, MAX_BLOCK_LEN};
use kolach_controld::model::subnet::overlaps;
use libfuzzer_sys::fuzz_target;

/// Counting blocks one by one is fine up to this many.
const COUNTABLE: u64 = 4096;

fn check_spec(spec: &PoolSpec, name: &str) {
    assert_eq!(spec.name, name);
    assert!(!spec.subnets.is_empty());
    assert!(spec.max_blocks_per_host >= 1);
    assert!(spec.block_len <= MAX_BLOCK_LEN);
    for (i, s) in spec.subnets.iter().enumerate() {
        assert!(spec.block_len >= s.prefix_len(), "block /{} in {s}", spec.block_len);
        assert_eq!(s.network(), s.addr(), "{s} has host bits");
        for t in &spec.subnets[..i] {
            assert!(!overlaps(*s, *t), "{s} overlaps {t}");
        }
    }
    let again = PoolSpec::parse(name, spec.to_json().as_bytes()).expect("our own value parses");
    assert_eq!(&again, spec);
    let n = spec.block_count();
    assert!(n >= 1);
    if n <= COUNTABLE {
        let blocks: Vec<Ipv4Net> = spec.blocks().collect();
        assert_eq!(blocks.len() as u64, n);
        for b in &blocks {
            assert_eq!(b.prefix_len(), spec.block_len);
            assert!(spec.contains(*b));
        }
    }
}

/// Every usable spec is disjoint from the network and from every other one.
fn check_set(set: &PoolSet) {
    let specs: Vec<&PoolSpec> = set.specs().collect();
    for (i, a) in specs.iter().enumerate() {
        if let Some(n) = set.network() {
            assert!(a.subnets.iter().all(|s| !overlaps(*s, n)), "pool {} in {n}", a.name);
        }
        for b in &specs[..i] {
            for s in &a.subnets {
                for t in &b.subnets {
                    assert!(!overlaps(*s, *t), "pool {} {s} overlaps pool {} {t}", a.name, b.name);
                }
            }
        }
    }
    for (name, e) in set.entries() {
        if let Some(s) = &e.spec {
            assert_eq!(&s.name, name);
        }
        if let Some(why) = &e.error {
            assert!(why.len() < 4096, "error of {} bytes", why.len());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut pieces = data.split(|b| *b == 0);
    let name = String::from_utf8_lossy(pieces.next().unwrap_or_default()).into_owned();
    let value = pieces.next().unwrap_or_default();
    match PoolSpec::parse(&name, value) {
        Ok(spec) => check_spec(&spec, &name),
        Err(e) => {
            let line = e.to_string();
            assert!(line.starts_with("pool "));
            assert!(line.len() < 4096, "error of {} bytes", line.len());
        }
    }

    // The watch: the first pair and then every further (name, value) pair,
    // put in order, a network set, and the first pool deleted.
    let mut set = PoolSet::default();
    set.put(name.clone(), value.to_vec(), 1);
    check_set(&set);
    let mut rev = 2;
    while let Some(n) = pieces.next() {
        let v = pieces.next().unwrap_or_default();
        set.put(String::from_utf8_lossy(n).into_owned(), v.to_vec(), rev);
        rev += 1;
        check_set(&set);
    }
    set.set_network(Some("10.0.0.0/8".parse().unwrap()));
    check_set(&set);
    set.delete(&name);
    check_set(&set);
    set.set_network(None);
    check_set(&set);
});
