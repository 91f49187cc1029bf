use super::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn network() -> Option<Ipv4Net> {
    Some(net("10.50.0.0/16"))
}

#[test]
fn a_good_pool_and_its_defaults() {
    let p = PoolSpec::parse("blue", br#"{"Subnets":["203.0.113.0/24"]}"#).unwrap();
    assert_eq!(p.subnets, vec![net("203.0.113.0/24")]);
    assert_eq!(p.block_len, 28);
    assert_eq!(p.max_blocks_per_host, 20);
    assert_eq!(p.block_count(), 16);
    let blocks: Vec<_> = p.blocks().take(2).collect();
    assert_eq!(blocks, vec![net("203.0.113.0/28"), net("203.0.113.16/28")]);
    // A /29 subnet: blocks default to the subnet's own size.
    let p = PoolSpec::parse("small", br#"{"Subnets":["198.51.100.8/29"]}"#).unwrap();
    assert_eq!(p.block_len, 29);
    // Round trip through the JSON kolachctl writes.
    let q = PoolSpec::parse("small", p.to_json().as_bytes()).unwrap();
    assert_eq!(p, q);
}

#[test]
fn validation_table() {
    let cases: &[(&str, &str, &str)] = &[
        ("Blue", r#"{"Subnets":["203.0.113.0/24"]}"#,
         "pool Blue: the name must match ^[a-z][a-z0-9_.-]*$ (at most 63 characters)"),
        ("9lives", r#"{"Subnets":["203.0.113.0/24"]}"#,
         "pool 9lives: the name must match ^[a-z][a-z0-9_.-]*$ (at most 63 characters)"),
        ("default", r#"{"Subnets":["203.0.113.0/24"]}"#,
         "pool default: \"default\" is the host subnet's pool and cannot be defined in etcd"),
        ("blue", "not json",
         "pool blue: value is not a pool definition: expected ident at line 1 column 2"),
        ("blue", r#"{"Subnets":[]}"#,
         "pool blue: Subnets is empty: a pool needs at least one subnet"),
        ("blue", r#"{"Subnets":["203.0.113.0/33"]}"#,
         "pool blue: Subnets 203.0.113.0/33 is not an IPv4 CIDR"),
        ("blue", r#"{"Subnets":["2001:db8::/64"]}"#,
         "pool blue: Subnets 2001:db8::/64 is not an IPv4 CIDR"),
        ("blue", r#"{"Subnets":["203.0.113.5/24"]}"#,
         "pool blue: Subnets 203.0.113.5/24 has host bits set (did you mean 203.0.113.0/24?)"),
        ("blue", r#"{"Subnets":["203.0.113.0/24","203.0.113.128/25"]}"#,
         "pool blue: Subnets 203.0.113.128/25 overlaps 203.0.113.0/24 of the same pool"),
        ("blue", r#"{"Subnets":["203.0.113.0/24"],"BlockLen":31}"#,
         "pool blue: BlockLen 31 is not in 24..=30 (from the prefix length of the pool's narrowest subnet to 30)"),
        ("blue", r#"{"Subnets":["203.0.113.0/24"],"BlockLen":20}"#,
         "pool blue: BlockLen 20 is not in 24..=30 (from the prefix length of the pool's narrowest subnet to 30)"),
        ("blue", r#"{"Subnets":["203.0.113.0/31"]}"#,
         "pool blue: Subnets /31 is smaller than the smallest block (/30)"),
        ("blue", r#"{"Subnets":["203.0.113.0/24"],"MaxBlocksPerHost":0}"#,
         "pool blue: MaxBlocksPerHost 0 must be at least 1"),
        ("blue", r#"{"Subnets":"203.0.113.0/24"}"#,
         "pool blue: value is not a pool definition: invalid type: string \"203.0.113.0/24\", expected a sequence at line 1 column 27"),
    ];
    let big = format!(
        r#"{{"Subnets":["203.0.113.0/24"],"x":"{}"}}"#,
        "y".repeat(20_000)
    );
    assert_eq!(
        PoolSpec::parse("blue", big.as_bytes())
            .unwrap_err()
            .to_string(),
        format!(
            "pool blue: value is {} bytes, more than the 16384 a pool definition can need",
            big.len()
        )
    );
    for (name, value, want) in cases {
        let got = PoolSpec::parse(name, value.as_bytes())
            .unwrap_err()
            .to_string();
        assert_eq!(&got, want, "{name} {value}");
    }
}

#[test]
fn pools_stay_out_of_the_network_and_of_each_other() {
    let red = PoolSpec::parse("red", br#"{"Subnets":["203.0.113.0/25"]}"#).unwrap();
    let blue = PoolSpec::parse("blue", br#"{"Subnets":["203.0.113.64/26"]}"#).unwrap();
    assert_eq!(
        blue.check_against(network(), [&red])
            .unwrap_err()
            .to_string(),
        "pool blue: Subnets 203.0.113.64/26 overlaps 203.0.113.0/25 of pool red"
    );
    let inside = PoolSpec::parse("inside", br#"{"Subnets":["10.50.200.0/24"]}"#).unwrap();
    assert_eq!(
        inside.check_against(network(), []).unwrap_err().to_string(),
        "pool inside: Subnets 10.50.200.0/24 overlaps the overlay Network 10.50.0.0/16"
    );
    // Itself is not "another pool".
    assert!(red.check_against(network(), [&red]).is_ok());
}

#[test]
fn a_broken_edit_keeps_the_last_good_spec() {
    let mut set = PoolSet::default();
    set.set_network(network());
    let ch = set.put(
        "blue".into(),
        br#"{"Subnets":["203.0.113.0/24"]}"#.to_vec(),
        5,
    );
    assert_eq!(ch, vec![("blue".to_string(), None)]);
    let ch = set.put(
        "blue".into(),
        br#"{"Subnets":["10.50.1.0/24"]}"#.to_vec(),
        6,
    );
    assert_eq!(ch.len(), 1);
    let e = set.get("blue").unwrap();
    assert_eq!(
        e.spec.as_ref().unwrap().subnets,
        vec![net("203.0.113.0/24")]
    );
    assert_eq!(
        e.error.as_deref(),
        Some("pool blue: Subnets 10.50.1.0/24 overlaps the overlay Network 10.50.0.0/16; keeping its last good definition")
    );
    assert_eq!(e.mod_revision, 6);
    // Fixed again: the new spec is in use and the error is gone.
    set.put(
        "blue".into(),
        br#"{"Subnets":["198.51.100.0/24"]}"#.to_vec(),
        7,
    );
    let e = set.get("blue").unwrap();
    assert_eq!(
        e.spec.as_ref().unwrap().subnets,
        vec![net("198.51.100.0/24")]
    );
    assert!(e.error.is_none());
    // A new broken pool is known (its error shows) but not usable.
    set.put("bad".into(), b"{".to_vec(), 8);
    assert!(set.spec("bad").is_none());
    assert!(set.get("bad").unwrap().error.is_some());
    // Deleted: gone.
    let ch = set.delete("blue");
    assert_eq!(ch, vec![("blue".to_string(), None)]);
    assert!(set.get("blue").is_none());
}

#[test]
fn of_two_overlapping_pools_the_first_key_stays() {
    let mut set = PoolSet::default();
    set.replace(vec![
        ("b".into(), br#"{"Subnets":["203.0.113.0/24"]}"#.to_vec(), 3),
        ("a".into(), br#"{"Subnets":["203.0.113.0/25"]}"#.to_vec(), 4),
    ]);
    assert!(set.spec("a").is_some());
    assert!(set.spec("b").is_none());
    assert_eq!(
        set.get("b").unwrap().error.as_deref(),
        Some("pool b: Subnets 203.0.113.0/24 overlaps 203.0.113.0/25 of pool a")
    );
}

#[test]
fn a_network_learned_later_disables_a_pool_inside_it() {
    let mut set = PoolSet::default();
    set.put("p".into(), br#"{"Subnets":["10.50.9.0/24"]}"#.to_vec(), 2);
    assert!(set.spec("p").is_some());
    set.set_network(network());
    assert!(set.spec("p").is_none());
}
