//! Address pools, pure: the value of `<prefix>/pools/<name>`, its rules
//! (DESIGN §10), and the set of pools the watch has seen.
//!
//! A broken definition never replaces a good one: the pool keeps its last
//! good spec (or stays unusable) and its error is shown, like a broken
//! network config.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::subnet::overlaps;
use crate::model::text::shown;

/// The pool name reported for addresses out of the host's own subnet.
pub const DEFAULT_POOL: &str = "default";
pub const DEFAULT_BLOCK_LEN: u8 = 28;
pub const DEFAULT_MAX_BLOCKS_PER_HOST: u32 = 20;
/// Smallest block: 4 addresses.
pub const MAX_BLOCK_LEN: u8 = 30;
/// Room for a few hundred subnets; a larger value is refused unparsed.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pool {name}: {why}")]
pub struct PoolError {
    pub name: String,
    pub why: String,
}

fn err(name: &str, why: impl Into<String>) -> PoolError {
    PoolError {
        name: shown(name),
        why: why.into(),
    }
}

/// A validated pool definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub name: String,
    pub subnets: Vec<Ipv4Net>,
    pub block_len: u8,
    pub max_blocks_per_host: u32,
}

/// The JSON in etcd, as written by kolachctl or by hand.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PoolJson {
    subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    block_len: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_blocks_per_host: Option<u64>,
}

/// `^[a-z][a-z0-9_.-]*$`, at most 63 characters (a Kubernetes namespace is
/// the usual name), and not the default pool's name.
pub fn check_name(name: &str) -> Result<(), PoolError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.' || c == '-');
    if !first_ok || !rest_ok || name.len() > 63 {
        return Err(err(
            name,
            "the name must match ^[a-z][a-z0-9_.-]*$ (at most 63 characters)",
        ));
    }
    if name == DEFAULT_POOL {
        return Err(err(
            name,
            "\"default\" is the host subnet's pool and cannot be defined in etcd",
        ));
    }
    Ok(())
}

impl PoolSpec {
    /// Parses and checks one pool on its own (see [`check_against`] for the
    /// rules that involve the network and the other pools).
    pub fn parse(name: &str, value: &[u8]) -> Result<PoolSpec, PoolError> {
        check_name(name)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(err(
                name,
                format!(
                    "value is {} bytes, more than the {MAX_VALUE_BYTES} a pool definition can need",
                    value.len()
                ),
            ));
        }
        let json: PoolJson = serde_json::from_slice(value)
            .map_err(|e| err(name, format!("value is not a pool definition: {e}")))?;
        let mut subnets = Vec::with_capacity(json.subnets.len());
        for s in &json.subnets {
            subnets.push(parse_subnet(name, s)?);
        }
        let block_len = json.block_len.map(|n| u8::try_from(n).unwrap_or(u8::MAX));
        let max = match json.max_blocks_per_host {
            None => DEFAULT_MAX_BLOCKS_PER_HOST,
            Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
        };
        PoolSpec::new(name, subnets, block_len, max)
    }

    /// Builds a spec from parts (kolachctl's request), with the same checks.
    pub fn new(
        name: &str,
        subnets: Vec<Ipv4Net>,
        block_len: Option<u8>,
        max_blocks_per_host: u32,
    ) -> Result<PoolSpec, PoolError> {
        check_name(name)?;
        if subnets.is_empty() {
            return Err(err(
                name,
                "Subnets is empty: a pool needs at least one subnet",
            ));
        }
        for (i, a) in subnets.iter().enumerate() {
            if a.network() != a.addr() {
                return Err(err(
                    name,
                    format!(
                        "Subnets {a} has host bits set (did you mean {}?)",
                        a.trunc()
                    ),
                ));
            }
            if let Some(b) = subnets[..i].iter().find(|b| overlaps(*a, **b)) {
                return Err(err(
                    name,
                    format!("Subnets {a} overlaps {b} of the same pool"),
                ));
            }
        }
        let narrowest = subnets.iter().map(|s| s.prefix_len()).max().unwrap_or(0);
        let block_len = block_len.unwrap_or(DEFAULT_BLOCK_LEN.max(narrowest));
        if block_len < narrowest || block_len > MAX_BLOCK_LEN {
            let range = if narrowest > MAX_BLOCK_LEN {
                format!(
                    "Subnets /{narrowest} is smaller than the smallest block (/{MAX_BLOCK_LEN})"
                )
            } else {
                format!(
                    "BlockLen {block_len} is not in {narrowest}..={MAX_BLOCK_LEN} (from the prefix length of the pool's narrowest subnet to 30)"
                )
            };
            return Err(err(name, range));
        }
        if max_blocks_per_host == 0 {
            return Err(err(name, "MaxBlocksPerHost 0 must be at least 1"));
        }
        Ok(PoolSpec {
            name: name.to_string(),
            subnets,
            block_len,
            max_blocks_per_host,
        })
    }

    /// The rules between pools and with the overlay: disjoint from `network`
    /// and from every other pool's subnets.
    pub fn check_against<'a>(
        &self,
        network: Option<Ipv4Net>,
        others: impl IntoIterator<Item = &'a PoolSpec>,
    ) -> Result<(), PoolError> {
        for s in &self.subnets {
            if let Some(n) = network.filter(|n| overlaps(*s, *n)) {
                return Err(err(
                    &self.name,
                    format!("Subnets {s} overlaps the overlay Network {n}"),
                ));
            }
        }
        for o in others.into_iter().filter(|o| o.name != self.name) {
            for s in &self.subnets {
                if let Some(t) = o.subnets.iter().find(|t| overlaps(*s, **t)) {
                    return Err(err(
                        &self.name,
                        format!("Subnets {s} overlaps {t} of pool {}", o.name),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The JSON for etcd (defaults spelled out).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&PoolJson {
            subnets: self.subnets.iter().map(|s| s.to_string()).collect(),
            block_len: Some(u64::from(self.block_len)),
            max_blocks_per_host: Some(u64::from(self.max_blocks_per_host)),
        })
        .expect("a pool serializes")
    }

    /// Every block of the pool, in address order.
    pub fn blocks(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        self.subnets
            .iter()
            .flat_map(|s| s.subnets(self.block_len).expect("block_len >= prefix"))
    }

    pub fn block_count(&self) -> u64 {
        self.subnets
            .iter()
            .map(|s| 1u64 << (self.block_len - s.prefix_len()))
            .sum()
    }

    pub fn contains(&self, block: Ipv4Net) -> bool {
        self.subnets.iter().any(|s| s.contains(&block))
    }
}

fn parse_subnet(name: &str, s: &str) -> Result<Ipv4Net, PoolError> {
    s.parse::<Ipv4Net>()
        .map_err(|_| err(name, format!("Subnets {} is not an IPv4 CIDR", shown(s))))
}

/// What the watch knows of one pool key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    /// The spec in use: the last good one.
    pub spec: Option<PoolSpec>,
    /// Why the current value is not in use.
    pub error: Option<String>,
    pub mod_revision: i64,
}

/// Every pool under `<prefix>/pools/`, with the rules between them applied
/// in key order: of two overlapping pools the one that came first stays.
#[derive(Debug, Clone, Default)]
pub struct PoolSet {
    entries: BTreeMap<String, PoolEntry>,
    raw: BTreeMap<String, (Vec<u8>, i64)>,
    network: Option<Ipv4Net>,
}

/// One line per change worth logging: (pool, error or None when now good).
pub type Change = (String, Option<String>);

impl PoolSet {
    pub fn get(&self, name: &str) -> Option<&PoolEntry> {
        self.entries.get(name)
    }

    /// The usable spec of `name`.
    pub fn spec(&self, name: &str) -> Option<&PoolSpec> {
        self.entries.get(name).and_then(|e| e.spec.as_ref())
    }

    pub fn entries(&self) -> impl Iterator<Item = (&String, &PoolEntry)> {
        self.entries.iter()
    }

    pub fn specs(&self) -> impl Iterator<Item = &PoolSpec> {
        self.entries.values().filter_map(|e| e.spec.as_ref())
    }

    pub fn network(&self) -> Option<Ipv4Net> {
        self.network
    }

    /// The raw value and mod revision of a key, for read-modify-write.
    pub fn raw(&self, name: &str) -> Option<&(Vec<u8>, i64)> {
        self.raw.get(name)
    }

    /// Replaces everything (a listing); returns what changed.
    pub fn replace(&mut self, all: Vec<(String, Vec<u8>, i64)>) -> Vec<Change> {
        self.raw = all.into_iter().map(|(k, v, r)| (k, (v, r))).collect();
        self.rebuild()
    }

    pub fn put(&mut self, name: String, value: Vec<u8>, mod_revision: i64) -> Vec<Change> {
        self.raw.insert(name, (value, mod_revision));
        self.rebuild()
    }

    pub fn delete(&mut self, name: &str) -> Vec<Change> {
        self.raw.remove(name);
        self.rebuild()
    }

    /// The overlay Network changed (or became known): the rules are checked again.
    pub fn set_network(&mut self, network: Option<Ipv4Net>) -> Vec<Change> {
        if self.network == network {
            return Vec::new();
        }
        self.network = network;
        self.rebuild()
    }

    /// Validates every raw value again, in key order, keeping a pool's last
    /// good spec when its new value is broken.
    fn rebuild(&mut self) -> Vec<Change> {
        let mut next: BTreeMap<String, PoolEntry> = BTreeMap::new();
        for (name, (value, rev)) in &self.raw {
            let checked = PoolSpec::parse(name, value).and_then(|s| {
                s.check_against(self.network, next.values().filter_map(|e| e.spec.as_ref()))?;
                Ok(s)
            });
            let entry = match checked {
                Ok(spec) => PoolEntry {
                    spec: Some(spec),
                    error: None,
                    mod_revision: *rev,
                },
                Err(e) => {
                    let last_good = self
                        .entries
                        .get(name)
                        .and_then(|old| old.spec.clone())
                        .filter(|old| {
                            old.check_against(
                                self.network,
                                next.values().filter_map(|e| e.spec.as_ref()),
                            )
                            .is_ok()
                        });
                    let mut why = e.to_string();
                    if last_good.is_some() {
                        let _ = write!(why, "; keeping its last good definition");
                    }
                    PoolEntry {
                        spec: last_good,
                        error: Some(why),
                        mod_revision: *rev,
                    }
                }
            };
            next.insert(name.clone(), entry);
        }
        let mut changes = Vec::new();
        for (name, e) in &next {
            let before = self.entries.get(name);
            if before.map(|b| (&b.spec, &b.error)) != Some((&e.spec, &e.error)) {
                changes.push((name.clone(), e.error.clone()));
            }
        }
        for name in self.entries.keys().filter(|n| !next.contains_key(*n)) {
            changes.push((name.clone(), None));
        }
        self.entries = next;
        changes
    }
}

#[cfg(test)]
mod tests;
