//! Cutting a host off from some addresses (etcd) with nftables in its own
//! namespace: every packet to or from them is dropped silently, as a
//! partition would, while the rest of the underlay (the other hosts) stays
//! reachable.

use anyhow::{Context, Result};

use crate::cmd;

/// The nftables table the cut lives in.
const TABLE: &str = "kolach_cutoff";

/// The ruleset that drops everything to and from `addrs`.
pub fn ruleset(addrs: &[String]) -> String {
    let set = addrs.join(", ");
    format!(
        "table inet {TABLE} {{\n\
         \tchain out {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} drop; }}\n\
         \tchain in {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} drop; }}\n\
         }}\n"
    )
}

/// Drops all traffic between namespace `ns` and `addrs`.
pub fn cut(ns: &str, addrs: &[String]) -> Result<()> {
    let rules = ruleset(addrs);
    let out = cmd::run_input(
        "ip",
        &["netns", "exec", ns, "nft", "-f", "-"],
        Some(rules.as_bytes()),
        cmd::DEFAULT_TIMEOUT,
    )
    .context("nft (install Debian's nftables: `make deps`)")?;
    anyhow::ensure!(
        out.success(),
        "nft -f in {ns} failed: {}\n{rules}",
        out.stderr.trim()
    );
    Ok(())
}

/// Removes the cut again.
pub fn heal(ns: &str) -> Result<()> {
    cmd::run_ok(
        "ip",
        &["netns", "exec", ns, "nft", "delete", "table", "inet", TABLE],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_every_address_both_ways() {
        let r = ruleset(&["198.18.0.254".into(), "198.18.0.251".into()]);
        assert!(
            r.contains("ip daddr { 198.18.0.254, 198.18.0.251 } drop"),
            "{r}"
        );
        assert!(
            r.contains("ip saddr { 198.18.0.254, 198.18.0.251 } drop"),
            "{r}"
        );
    }
}
