//! The host firewall (ip-masq, forward rules) with the real `nft` and
//! `iptables` in a namespace this test makes, asserting on what `nft list`
//! and `iptables -S` show: the table and the tagged rules written once, a
//! second sync changing nothing, a new subnet or Network replacing only
//! ours, off and `--cleanup` removing ours, and a foreign nft table and an
//! untagged FORWARD rule untouched throughout.

mod common;

use common::{Netns, TempDir};
use ipnet::Ipv4Net;
use kolach_dataplaned::firewall::{self, Report, System, Wanted};

fn n(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn out(ns: &Netns, args: &[&str]) -> (bool, String) {
    let o = ns.exec(args);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn kolach_table(ns: &Netns) -> Option<String> {
    match out(ns, &["nft", "list", "table", "ip", "kolach"]) {
        (true, t) => Some(t),
        (false, _) => None,
    }
}

fn forward(ns: &Netns) -> Vec<String> {
    let (ok, text) = out(ns, &["iptables", "-S", "FORWARD"]);
    assert!(ok);
    text.lines().map(str::to_string).collect()
}

const FOREIGN: &str = "table inet other {\n\tchain guard {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tip saddr 10.99.0.0/16 counter accept\n\t}\n}\n";

#[test]
fn firewall_is_reconciled_and_leaves_others_alone() {
    let ns = Netns::new("kfw");
    let rt = ns.runtime();
    let plant = |args: &[&str]| {
        let o = ns.exec(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let dir = TempDir::new("kfw");
    let file = dir.0.join("foreign.nft");
    std::fs::write(&file, FOREIGN).unwrap();
    plant(&["nft", "-f", file.to_str().unwrap()]);
    plant(&["iptables", "-P", "FORWARD", "DROP"]);
    plant(&[
        "iptables",
        "-A",
        "FORWARD",
        "-s",
        "10.99.0.0/16",
        "-j",
        "ACCEPT",
    ]);
    let foreign = || out(&ns, &["nft", "list", "table", "inet", "other"]).1;
    let foreign_before = foreign();

    let sync = |w: Wanted| rt.run(async move { firewall::sync(&System, &w).await });
    let on = Wanted {
        network: n("10.50.0.0/16"),
        subnet: n("10.50.18.0/24"),
        ip_masq: true,
        forward_rules: true,
    };
    assert_eq!(
        sync(on),
        Report {
            changes: 3,
            errors: vec![]
        }
    );
    let table = kolach_table(&ns).expect("table ip kolach");
    assert_eq!(
        table,
        "table ip kolach {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr 10.50.0.0/16 ip daddr 10.50.0.0/16 return\n\t\tip saddr 10.50.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random\n\t\tip saddr != 10.50.0.0/16 ip daddr 10.50.18.0/24 return\n\t\tip saddr != 10.50.0.0/16 ip daddr 10.50.0.0/16 masquerade fully-random\n\t}\n}\n"
    );
    assert_eq!(
        forward(&ns),
        [
            "-P FORWARD DROP",
            "-A FORWARD -s 10.99.0.0/16 -j ACCEPT",
            "-A FORWARD -s 10.50.0.0/16 -m comment --comment \"kolach: forward from the overlay\" -j ACCEPT",
            "-A FORWARD -d 10.50.0.0/16 -m comment --comment \"kolach: forward to the overlay\" -j ACCEPT",
        ]
    );
    // What the kernel shows is what is wanted: nothing to do.
    assert_eq!(sync(on), Report::default());

    // A new lease: only the table changes; a new Network: the rules too.
    let moved = Wanted {
        subnet: n("10.50.7.0/24"),
        ..on
    };
    assert_eq!(sync(moved).changes, 1);
    assert!(kolach_table(&ns)
        .unwrap()
        .contains("ip daddr 10.50.7.0/24 return"));
    let renet = Wanted {
        network: n("10.60.0.0/16"),
        subnet: n("10.60.7.0/24"),
        ..on
    };
    assert_eq!(sync(renet).changes, 5);
    let f = forward(&ns);
    assert_eq!(f.len(), 4, "{f:?}");
    assert!(f[2].starts_with("-A FORWARD -s 10.60.0.0/16"), "{f:?}");
    assert!(f[3].starts_with("-A FORWARD -d 10.60.0.0/16"), "{f:?}");

    // Someone flushes the chain (Docker restarting): put back.
    plant(&[
        "iptables",
        "-D",
        "FORWARD",
        "-s",
        "10.99.0.0/16",
        "-j",
        "ACCEPT",
    ]);
    plant(&["iptables", "-F", "FORWARD"]);
    plant(&[
        "iptables",
        "-A",
        "FORWARD",
        "-s",
        "10.99.0.0/16",
        "-j",
        "ACCEPT",
    ]);
    assert_eq!(sync(renet).changes, 2);

    // Off: ours go, the rest stays.
    let off = Wanted {
        ip_masq: false,
        forward_rules: false,
        ..renet
    };
    assert_eq!(sync(off).changes, 3);
    assert_eq!(kolach_table(&ns), None);
    assert_eq!(
        forward(&ns),
        ["-P FORWARD DROP", "-A FORWARD -s 10.99.0.0/16 -j ACCEPT"]
    );
    assert_eq!(sync(off), Report::default());

    // --cleanup's part.
    assert_eq!(sync(on).changes, 3);
    let errors = rt.run(async { firewall::cleanup(&System).await });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(kolach_table(&ns), None);
    assert_eq!(
        forward(&ns),
        ["-P FORWARD DROP", "-A FORWARD -s 10.99.0.0/16 -j ACCEPT"]
    );
    assert_eq!(foreign(), foreign_before);
}

#[test]
fn no_firewall_in_the_host_means_no_forward_chain_made() {
    let ns = Netns::new("kfw0");
    let rt = ns.runtime();
    let w = Wanted {
        network: n("10.50.0.0/16"),
        subnet: n("10.50.18.0/24"),
        ip_masq: false,
        forward_rules: true,
    };
    assert_eq!(
        rt.run(async move { firewall::sync(&System, &w).await }),
        Report::default()
    );
    let (_, ruleset) = out(&ns, &["nft", "list", "ruleset"]);
    assert!(ruleset.trim().is_empty(), "{ruleset}");
}
