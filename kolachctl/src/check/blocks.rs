//! The third part of `ipam check`: this host's allocations against the
//! blocks etcd holds. Every address of a named pool must lie in a block that
//! etcd gives to this host for that pool; every default-pool address must lie
//! in the host's current subnet. What does not is reported with the pods that
//! hold those addresses; nothing here is released (those pods may be running:
//! their addresses are not leaked, they are at risk). Pure: the caller reads
//! the allocations, blocks and subnet from controld.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

/// One allocation as this comparison needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub address: Ipv4Addr,
    pub pool: String,
    /// The block the address was handed out of (the host's subnet at the
    /// time for the default pool).
    pub block: Ipv4Net,
    /// `<container id>/<ifname>`, shortened for people.
    pub pod: String,
}

/// One block as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdBlock {
    pub block: Ipv4Net,
    pub pool: String,
    pub holder: Ipv4Addr,
    pub is_self: bool,
}

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// No key for the block: its lease expired or it was deleted.
    NotInEtcd,
    /// Another host holds the block.
    OtherHost,
    /// etcd has the block under another pool.
    OtherPool,
    /// A default-pool address outside the host's current subnet.
    OutsideSubnet,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct BlockIssue {
    pub problem: Problem,
    /// The block (for `outside_subnet`, the subnet the addresses came from).
    pub block: String,
    pub pool: String,
    /// `other_host`: who etcd says holds it; `other_pool`: etcd's pool;
    /// `outside_subnet`: the host's subnet now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd: Option<String>,
    /// `<address> <pod>` of each allocation concerned.
    pub addresses: Vec<String>,
}

impl BlockIssue {
    /// One line for people.
    pub fn text(&self) -> String {
        let n = self.addresses.len();
        let who = self.addresses.join(", ");
        let etcd = self.etcd.as_deref().unwrap_or("?");
        match self.problem {
            Problem::NotInEtcd => format!(
                "block {} of pool {} holds {n} of this host's addresses but is not in etcd \
                 (kolach-controld claims it back while it holds its lease): {who}",
                self.block, self.pool
            ),
            Problem::OtherHost => format!(
                "block {} of pool {} holds {n} of this host's addresses but etcd gives it to {etcd}: \
                 these pods hold addresses this host does not own; delete them: {who}",
                self.block, self.pool
            ),
            Problem::OtherPool => format!(
                "block {} holds {n} of this host's addresses of pool {} but etcd has it in pool {etcd}: {who}",
                self.block, self.pool
            ),
            Problem::OutsideSubnet => format!(
                "{n} default-pool addresses from {} lie outside this host's subnet {etcd} \
                 (the lease changed; peers no longer route them here; restart those pods): {who}",
                self.block
            ),
        }
    }
}

/// What does not match between `held` and `etcd` (every host's blocks),
/// given the host's current `subnet`. In block order.
pub fn compare(held: &[Held], etcd: &[EtcdBlock], subnet: Option<Ipv4Net>) -> Vec<BlockIssue> {
    let mut by_block: BTreeMap<(Ipv4Net, &str), Vec<&Held>> = BTreeMap::new();
    for h in held {
        by_block
            .entry((h.block, h.pool.as_str()))
            .or_default()
            .push(h);
    }
    let mut out = Vec::new();
    for ((block, pool), hs) in by_block {
        let addresses = || {
            hs.iter()
                .map(|h| format!("{} {}", h.address, h.pod))
                .collect()
        };
        let issue = |problem, etcd: Option<String>| BlockIssue {
            problem,
            block: block.to_string(),
            pool: pool.to_string(),
            etcd,
            addresses: addresses(),
        };
        if pool == kolach_proto::pod::DEFAULT_POOL {
            // Without a lease there is no subnet to compare with; controld's
            // status says so.
            if let Some(s) = subnet.filter(|s| hs.iter().any(|h| !s.contains(&h.address))) {
                let mut i = issue(Problem::OutsideSubnet, Some(s.to_string()));
                i.addresses = hs
                    .iter()
                    .filter(|h| !s.contains(&h.address))
                    .map(|h| format!("{} {}", h.address, h.pod))
                    .collect();
                out.push(i);
            }
            continue;
        }
        match etcd.iter().find(|b| b.block == block) {
            None => out.push(issue(Problem::NotInEtcd, None)),
            Some(b) if !b.is_self => {
                out.push(issue(Problem::OtherHost, Some(b.holder.to_string())))
            }
            Some(b) if b.pool != pool => out.push(issue(Problem::OtherPool, Some(b.pool.clone()))),
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(addr: &str, pool: &str, block: &str, pod: &str) -> Held {
        Held {
            address: addr.parse().unwrap(),
            pool: pool.into(),
            block: block.parse().unwrap(),
            pod: pod.into(),
        }
    }

    fn etcd(block: &str, pool: &str, holder: &str, is_self: bool) -> EtcdBlock {
        EtcdBlock {
            block: block.parse().unwrap(),
            pool: pool.into(),
            holder: holder.parse().unwrap(),
            is_self,
        }
    }

    const ME: &str = "198.18.0.1";
    const OTHER: &str = "198.18.0.2";

    #[test]
    fn blocks_held_in_etcd_by_this_host_are_fine() {
        let h = [
            held("203.0.113.2", "blue", "203.0.113.0/28", "c1/eth0"),
            held("203.0.113.3", "blue", "203.0.113.0/28", "c2/eth0"),
            held("10.50.7.2", "default", "10.50.7.0/24", "c3/eth0"),
        ];
        let e = [etcd("203.0.113.0/28", "blue", ME, true)];
        assert_eq!(compare(&h, &e, Some("10.50.7.0/24".parse().unwrap())), []);
    }

    #[test]
    fn each_kind_of_mismatch_is_named_with_its_pods() {
        let h = [
            held("203.0.113.2", "blue", "203.0.113.0/28", "c1/eth0"),
            held("203.0.113.18", "blue", "203.0.113.16/28", "c2/eth0"),
            held("203.0.113.19", "blue", "203.0.113.16/28", "c3/eth0"),
            held("203.0.113.34", "blue", "203.0.113.32/28", "c4/eth0"),
            held("10.50.7.2", "default", "10.50.7.0/24", "c5/eth0"),
            held("10.50.9.2", "default", "10.50.9.0/24", "c6/eth0"),
        ];
        let e = [
            etcd("203.0.113.16/28", "blue", OTHER, false),
            etcd("203.0.113.32/28", "red", ME, true),
        ];
        let got = compare(&h, &e, Some("10.50.9.0/24".parse().unwrap()));
        let kinds: Vec<(Problem, &str, Option<&str>, usize)> = got
            .iter()
            .map(|i| {
                (
                    i.problem,
                    i.block.as_str(),
                    i.etcd.as_deref(),
                    i.addresses.len(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                (
                    Problem::OutsideSubnet,
                    "10.50.7.0/24",
                    Some("10.50.9.0/24"),
                    1
                ),
                (Problem::NotInEtcd, "203.0.113.0/28", None, 1),
                (Problem::OtherHost, "203.0.113.16/28", Some(OTHER), 2),
                (Problem::OtherPool, "203.0.113.32/28", Some("red"), 1),
            ]
        );
        assert_eq!(
            got[2].text(),
            "block 203.0.113.16/28 of pool blue holds 2 of this host's addresses but etcd gives it \
             to 198.18.0.2: these pods hold addresses this host does not own; delete them: \
             203.0.113.18 c2/eth0, 203.0.113.19 c3/eth0"
        );
        assert!(got[0].text().contains("10.50.7.2 c5/eth0"));
        assert!(!got[0].text().contains("10.50.9.2"));
    }

    #[test]
    fn without_a_lease_default_addresses_are_not_judged() {
        let h = [held("10.50.7.2", "default", "10.50.7.0/24", "c1/eth0")];
        assert_eq!(compare(&h, &[], None), []);
    }
}
