use super::fake::FakeRunner;
use super::forward::{self, Listing, Op};
use super::masq::{self, Action};
use super::*;

fn n(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

const LIST_NFT: &str = "nft -j list table ip kolach";
const LIST_IPT: &str = "iptables -S FORWARD";
const NO_TABLE: &str = "Error: No such file or directory\nlist table ip kolach\n";

/// What nft 1.0.6 prints for the table replace_script writes.
const LISTED: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "kolach", "handle": 1}}, {"chain": {"family": "ip", "table": "kolach", "name": "postrouting", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}, {"rule": {"family": "ip", "table": "kolach", "chain": "postrouting", "handle": 2, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.50.0.0", "len": 16}}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "10.50.0.0", "len": 16}}}}, {"return": null}]}}, {"rule": {"family": "ip", "table": "kolach", "chain": "postrouting", "handle": 3, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.50.0.0", "len": 16}}}}, {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "224.0.0.0", "len": 4}}}}, {"masquerade": {"flags": "fully-random"}}]}}, {"rule": {"family": "ip", "table": "kolach", "chain": "postrouting", "handle": 4, "expr": [{"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.50.0.0", "len": 16}}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "10.50.18.0", "len": 24}}}}, {"return": null}]}}, {"rule": {"family": "ip", "table": "kolach", "chain": "postrouting", "handle": 5, "expr": [{"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.50.0.0", "len": 16}}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "10.50.0.0", "len": 16}}}}, {"masquerade": {"flags": "fully-random"}}]}}]}"#;

fn wanted_rules() -> Vec<masq::Rule> {
    masq::rules(n("10.50.0.0/16"), n("10.50.18.0/24"))
}

#[test]
fn masq_rules_are_flannels_four() {
    let text: Vec<String> = wanted_rules().iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "ip saddr 10.50.0.0/16 ip daddr 10.50.0.0/16 return",
            "ip saddr 10.50.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
            "ip saddr != 10.50.0.0/16 ip daddr 10.50.18.0/24 return",
            "ip saddr != 10.50.0.0/16 ip daddr 10.50.0.0/16 masquerade fully-random",
        ]
    );
}

#[test]
fn replace_script_is_one_transaction_for_our_table_only() {
    let s = masq::replace_script(&wanted_rules());
    assert!(s.starts_with(
        "table ip kolach {}\ndelete table ip kolach\ntable ip kolach {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr 10.50.0.0/16 ip daddr 10.50.0.0/16 return\n"
    ), "{s}");
    assert!(s.ends_with("masquerade fully-random\n\t}\n}\n"), "{s}");
    assert_eq!(
        masq::delete_script(),
        "table ip kolach {}\ndelete table ip kolach\n"
    );
    // Nothing but table ip kolach is named.
    for line in s.lines().filter(|l| l.contains("table")) {
        assert!(line.contains("table ip kolach"), "{line}");
    }
}

#[test]
fn nft_json_reads_back_as_the_wanted_rules() {
    let t = masq::parse(LISTED).unwrap();
    assert_eq!(t.other, 0);
    assert_eq!(t.chains.len(), 1);
    let want = wanted_rules();
    assert_eq!(
        t.chains[0].rules,
        want.iter().copied().map(Some).collect::<Vec<_>>()
    );
    assert_eq!(masq::plan(Some(&want), Some(&t)), Action::Keep);
}

#[test]
fn masq_plan_replaces_anything_else_and_deletes_when_off() {
    let want = wanted_rules();
    let t = masq::parse(LISTED).unwrap();
    assert_eq!(masq::plan(None, None), Action::Keep);
    assert_eq!(masq::plan(None, Some(&t)), Action::Delete);
    assert_eq!(masq::plan(Some(&want), None), Action::Replace);
    // Another subnet (a new lease), another Network.
    let other = masq::rules(n("10.50.0.0/16"), n("10.50.7.0/24"));
    assert_eq!(masq::plan(Some(&other), Some(&t)), Action::Replace);
    // A rule someone added, one removed, another priority, a set.
    let mut extra = t.clone();
    extra.chains[0].rules.push(None);
    assert_eq!(masq::plan(Some(&want), Some(&extra)), Action::Replace);
    let mut fewer = t.clone();
    fewer.chains[0].rules.pop();
    assert_eq!(masq::plan(Some(&want), Some(&fewer)), Action::Replace);
    let mut prio = t.clone();
    prio.chains[0].base.as_mut().unwrap().2 = 0;
    assert_eq!(masq::plan(Some(&want), Some(&prio)), Action::Replace);
    let mut set = t.clone();
    set.other = 1;
    assert_eq!(masq::plan(Some(&want), Some(&set)), Action::Replace);
}

#[test]
fn nft_json_oddities() {
    assert!(masq::parse("not json").is_err());
    assert!(masq::parse(r#"{"x": 1}"#).is_err());
    // A masquerade without fully-random, a /32 as a plain address, a counter.
    let t = masq::parse(
        r#"{"nftables": [{"chain": {"name": "postrouting", "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
        {"rule": {"chain": "postrouting", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.50.0.0", "len": 16}}}}, {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "10.1.2.3"}}, {"masquerade": {"flags": ["fully-random"]}}]}},
        {"rule": {"chain": "postrouting", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.50.0.0", "len": 16}}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "10.50.0.0", "len": 16}}}}, {"masquerade": null}]}},
        {"rule": {"chain": "postrouting", "expr": [{"counter": {"packets": 0, "bytes": 0}}]}},
        {"set": {"name": "s"}}]}"#,
    )
    .unwrap();
    let rules = &t.chains[0].rules;
    assert_eq!(
        rules[0].unwrap().to_string(),
        "ip saddr 10.50.0.0/16 ip daddr != 10.1.2.3/32 masquerade fully-random"
    );
    assert_eq!(rules[1..], [None, None]);
    assert_eq!(t.other, 1);
}

fn fwd() -> Vec<forward::Spec> {
    forward::rules(n("10.50.0.0/16"))
}

const DOCKER: &str =
    "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -o docker0 -j DOCKER\n";

#[test]
fn iptables_listing_is_read_word_by_word() {
    let l = forward::parse(
        "-P FORWARD DROP\n-A FORWARD -s 10.50.0.0/16 -m comment --comment \"kolach: forward from the overlay\" -j ACCEPT\n-A FORWARD -m comment --comment \"a \\\"quoted\\\" one\" -j ACCEPT\n-A DOCKER -j RETURN\n",
    );
    assert_eq!(l.policy, "DROP");
    assert_eq!(l.rules.len(), 2);
    assert_eq!(l.rules[0], fwd()[0]);
    assert_eq!(l.rules[1][3], "a \"quoted\" one");
    assert!(forward::is_ours(&l.rules[0]));
    assert!(!forward::is_ours(&l.rules[1]));
    assert_eq!(
        forward::words("-m comment --comment \"\""),
        ["-m", "comment", "--comment", ""]
    );
}

#[test]
fn forward_plan_adds_what_is_missing_and_removes_only_our_stale_rules() {
    let want = fwd();
    let docker = forward::parse(DOCKER);
    assert_eq!(
        forward::plan(&want, &docker),
        Some(vec![
            Op::Append(want[0].clone()),
            Op::Append(want[1].clone())
        ])
    );
    // In place: nothing.
    let mut have = docker.clone();
    have.rules.extend(want.iter().cloned());
    assert_eq!(forward::plan(&want, &have), Some(vec![]));
    // An old Network's rules and a duplicate go, an untagged rule stays.
    let old = forward::rules(n("10.40.0.0/16"));
    let untagged = forward::words("-s 10.40.0.0/16 -j ACCEPT");
    let mut stale = docker.clone();
    stale.rules.extend([
        old[0].clone(),
        untagged,
        want[1].clone(),
        want[1].clone(),
        old[1].clone(),
    ]);
    assert_eq!(
        forward::plan(&want, &stale),
        Some(vec![
            Op::Delete(old[0].clone()),
            Op::Delete(want[1].clone()),
            Op::Delete(old[1].clone()),
            Op::Append(want[0].clone()),
        ])
    );
    // Off: ours go, nothing else.
    assert_eq!(
        forward::plan(&[], &have),
        Some(vec![
            Op::Delete(want[0].clone()),
            Op::Delete(want[1].clone())
        ])
    );
    // No firewall at all (or an empty accepting chain): nothing to do.
    let empty = Listing {
        policy: "ACCEPT".into(),
        rules: vec![],
    };
    assert_eq!(forward::plan(&want, &empty), None);
    assert_eq!(
        Op::Append(want[0].clone()).args().join(" "),
        "-A FORWARD -s 10.50.0.0/16 -m comment --comment kolach: forward from the overlay -j ACCEPT"
    );
}

fn on() -> Wanted {
    Wanted {
        network: n("10.50.0.0/16"),
        subnet: n("10.50.18.0/24"),
        ip_masq: true,
        forward_rules: true,
    }
}

#[tokio::test]
async fn first_sync_writes_table_and_rules_then_nothing() {
    let r = FakeRunner::default();
    r.reply(LIST_NFT, false, "", NO_TABLE);
    r.reply(LIST_IPT, true, DOCKER, "");
    let report = sync(&r, &on()).await;
    assert_eq!(
        report,
        Report {
            changes: 3,
            errors: vec![]
        }
    );
    assert_eq!(
        r.take_calls(),
        [
            LIST_NFT,
            "nft -f -",
            LIST_IPT,
            "iptables -A FORWARD -s 10.50.0.0/16 -m comment --comment kolach: forward from the overlay -j ACCEPT",
            "iptables -A FORWARD -d 10.50.0.0/16 -m comment --comment kolach: forward to the overlay -j ACCEPT",
        ]
    );
    assert_eq!(
        r.scripts.lock().unwrap()[0],
        masq::replace_script(&wanted_rules())
    );
    // What the kernel now shows: nothing to do.
    r.reply(LIST_NFT, true, LISTED, "");
    let listed = format!(
        "{DOCKER}-A FORWARD -s 10.50.0.0/16 -m comment --comment \"kolach: forward from the overlay\" -j ACCEPT\n-A FORWARD -d 10.50.0.0/16 -m comment --comment \"kolach: forward to the overlay\" -j ACCEPT\n"
    );
    r.reply(LIST_IPT, true, &listed, "");
    assert_eq!(sync(&r, &on()).await, Report::default());
    assert_eq!(r.take_calls(), [LIST_NFT, LIST_IPT]);

    // Both off: the table and our rules go.
    let off = Wanted {
        ip_masq: false,
        forward_rules: false,
        ..on()
    };
    assert_eq!(sync(&r, &off).await.changes, 3);
    assert_eq!(r.take_calls()[1], "nft -f -");
    assert_eq!(r.scripts.lock().unwrap()[1], masq::delete_script());
}

#[tokio::test]
async fn missing_tools_are_one_line_each_and_only_when_needed() {
    let r = FakeRunner::default();
    r.missing
        .lock()
        .unwrap()
        .extend(["nft".into(), "iptables".into()]);
    // No iptables (and no nft to look for its table): nothing uses
    // iptables here, so no forward rules are missed.
    let report = sync(&r, &on()).await;
    assert_eq!(
        report.errors,
        ["ip-masq: nft not found (install the Debian package nftables)"]
    );
    // nft shows an iptables FORWARD chain, but there is no iptables to add to it.
    r.missing.lock().unwrap().remove("nft");
    r.reply(LIST_NFT, false, "", NO_TABLE);
    assert_eq!(
        sync(&r, &on()).await.errors,
        ["forward rules: iptables not found (install the Debian package iptables); table ip filter has a FORWARD chain that may drop the overlay's traffic"]
    );
    r.reply("nft list chain ip filter FORWARD", false, "", NO_TABLE);
    assert!(sync(&r, &on()).await.errors.is_empty());
    r.missing.lock().unwrap().insert("nft".into());
    let off = Wanted {
        ip_masq: false,
        forward_rules: false,
        ..on()
    };
    assert_eq!(sync(&r, &off).await, Report::default());
    assert!(cleanup(&r).await.is_empty());
}

#[tokio::test]
async fn refusals_are_reported_not_fatal() {
    let r = FakeRunner::default();
    r.reply(LIST_NFT, false, "", NO_TABLE);
    r.reply(
        "nft -f -",
        false,
        "",
        "Error: Could not process rule: Operation not supported\n",
    );
    r.reply(LIST_IPT, false, "", "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)\n");
    let report = sync(&r, &on()).await;
    assert_eq!(
        report.errors,
        [
            "ip-masq: nft -f refused the table: Error: Could not process rule: Operation not supported",
            "forward rules: iptables -S FORWARD: iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)",
        ]
    );
}

#[tokio::test]
async fn cleanup_removes_the_table_and_tagged_rules_only() {
    let r = FakeRunner::default();
    r.reply(LIST_NFT, true, LISTED, "");
    r.reply(
        LIST_IPT,
        true,
        "-P FORWARD DROP\n-A FORWARD -s 10.50.0.0/16 -j ACCEPT\n-A FORWARD -d 10.9.0.0/16 -m comment --comment \"kolach: forward to the overlay\" -j ACCEPT\n",
        "",
    );
    assert!(cleanup(&r).await.is_empty());
    assert_eq!(
        r.take_calls(),
        [
            LIST_NFT,
            "nft -f -",
            LIST_IPT,
            "iptables -D FORWARD -d 10.9.0.0/16 -m comment --comment kolach: forward to the overlay -j ACCEPT",
        ]
    );
}
