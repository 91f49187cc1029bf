//! ip-masq: flannel's masquerade rules, in nftables table `ip kolach`.
//!
//! flannel (`MasqRules`) installs, for Network NET and this host's SUBNET:
//! `-s NET -d NET -j RETURN` (inside the overlay: never), `-s NET ! -d
//! 224.0.0.0/4 -j MASQUERADE --random-fully` (pods to the world, multicast
//! left alone), `! -s NET -d SUBNET -j RETURN` (the world to our pods keeps
//! its source) and `! -s NET -d NET -j MASQUERADE --random-fully` (the host
//! to other hosts' pods goes out as the host's overlay address). Here they
//! are the same four rules in chain `postrouting` (nat, srcnat priority) of
//! a table only kolach writes, so nothing else's rules are ever read or
//! touched. [`rules`] and [`plan`] are pure; [`sync`] reads the table with
//! `nft -j list table ip kolach` and, when it is not exactly what is wanted,
//! replaces it whole in one transaction (create-if-absent, delete, add),
//! which the kernel applies atomically: no moment without the rules.

use std::fmt;

use ipnet::Ipv4Net;
use serde_json::Value;

use super::{RunError, Runner};

pub const FAMILY: &str = "ip";
pub const TABLE: &str = "kolach";
pub const CHAIN: &str = "postrouting";
/// srcnat, as `nft -j` reports it.
const SRCNAT: i64 = 100;
const MULTICAST: &str = "224.0.0.0/4";

/// `ip saddr` or `ip daddr` matching (or, negated, not matching) a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub net: Ipv4Net,
    pub negated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Return,
    /// `masquerade fully-random` (iptables' `--random-fully`).
    Masquerade,
}

/// One rule of ours: a source match, a destination match, a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub saddr: Match,
    pub daddr: Match,
    pub verdict: Verdict,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = |m: Match| format!("{}{}", if m.negated { "!= " } else { "" }, m.net);
        write!(
            f,
            "ip saddr {} ip daddr {} {}",
            m(self.saddr),
            m(self.daddr),
            match self.verdict {
                Verdict::Return => "return",
                Verdict::Masquerade => "masquerade fully-random",
            }
        )
    }
}

/// flannel's four rules for `network` and this host's `subnet`, in order.
pub fn rules(network: Ipv4Net, subnet: Ipv4Net) -> Vec<Rule> {
    let is = |net| Match {
        net,
        negated: false,
    };
    let not = |net| Match { net, negated: true };
    let multicast: Ipv4Net = MULTICAST.parse().expect("a prefix");
    vec![
        Rule {
            saddr: is(network),
            daddr: is(network),
            verdict: Verdict::Return,
        },
        Rule {
            saddr: is(network),
            daddr: not(multicast),
            verdict: Verdict::Masquerade,
        },
        Rule {
            saddr: not(network),
            daddr: is(subnet),
            verdict: Verdict::Return,
        },
        Rule {
            saddr: not(network),
            daddr: is(network),
            verdict: Verdict::Masquerade,
        },
    ]
}

/// The `nft -f` script that replaces table `ip kolach` with `rules`, in one
/// transaction: the empty `table` makes the `delete` valid when there is no
/// table yet.
pub fn replace_script(rules: &[Rule]) -> String {
    let mut s = format!(
        "table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\ntable {FAMILY} {TABLE} {{\n\tchain {CHAIN} {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
    );
    for r in rules {
        s.push_str(&format!("\t\t{r}\n"));
    }
    s.push_str("\t}\n}\n");
    s
}

/// The script that removes table `ip kolach`, there or not.
pub fn delete_script() -> String {
    format!("table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n")
}

/// A chain of table `ip kolach` as `nft -j` lists it. A rule this module
/// cannot read (someone else's, or a future kolach's) is None.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// (type, hook, priority, policy) of a base chain.
    pub base: Option<(String, String, i64, String)>,
    pub rules: Vec<Option<Rule>>,
}

/// Table `ip kolach` as the kernel has it; `other` counts objects that are
/// neither chains nor rules (sets, maps, counters...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub chains: Vec<Chain>,
    pub other: usize,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot read nft's JSON: {0}")]
pub struct ParseError(String);

/// Reads `nft -j list table ip kolach`.
pub fn parse(json: &str) -> Result<Table, ParseError> {
    let v: Value = serde_json::from_str(json).map_err(|e| ParseError(e.to_string()))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| ParseError("no \"nftables\" list".into()))?;
    let mut t = Table::default();
    for item in items {
        let Some((kind, body)) = item.as_object().and_then(|o| o.iter().next()) else {
            return Err(ParseError(format!("unexpected item {item}")));
        };
        match kind.as_str() {
            "metainfo" | "table" => {}
            "chain" => {
                let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
                let base = match (s("type"), s("hook")) {
                    (Some(ty), Some(hook)) => Some((
                        ty,
                        hook,
                        body.get("prio").and_then(Value::as_i64).unwrap_or(i64::MIN),
                        s("policy").unwrap_or_default(),
                    )),
                    _ => None,
                };
                t.chains.push(Chain {
                    name: s("name").unwrap_or_default(),
                    base,
                    rules: Vec::new(),
                });
            }
            "rule" => {
                let chain = body.get("chain").and_then(Value::as_str).unwrap_or("");
                let rule = body.get("expr").and_then(parse_rule);
                match t.chains.iter_mut().find(|c| c.name == chain) {
                    Some(c) => c.rules.push(rule),
                    None => t.other += 1,
                }
            }
            _ => t.other += 1,
        }
    }
    Ok(t)
}

/// `[match saddr, match daddr, verdict]`, the only shape of ours.
fn parse_rule(expr: &Value) -> Option<Rule> {
    let [s, d, v] = expr.as_array()?.as_slice() else {
        return None;
    };
    let verdict = match v.as_object()?.iter().next()? {
        (k, Value::Null) if k == "return" => Verdict::Return,
        (k, m) if k == "masquerade" => {
            let flags = m.get("flags")?;
            let fully = flags == "fully-random"
                || flags
                    .as_array()
                    .is_some_and(|a| a.len() == 1 && a[0] == "fully-random");
            if !fully {
                return None;
            }
            Verdict::Masquerade
        }
        _ => return None,
    };
    Some(Rule {
        saddr: parse_match(s, "saddr")?,
        daddr: parse_match(d, "daddr")?,
        verdict,
    })
}

fn parse_match(m: &Value, field: &str) -> Option<Match> {
    let m = m.get("match")?;
    let negated = match m.get("op")?.as_str()? {
        "==" => false,
        "!=" => true,
        _ => return None,
    };
    let left = m.get("left")?.get("payload")?;
    if left.get("protocol")? != "ip" || left.get("field")? != field {
        return None;
    }
    let right = m.get("right")?;
    let net = match right.get("prefix") {
        Some(p) => Ipv4Net::new(
            p.get("addr")?.as_str()?.parse().ok()?,
            u8::try_from(p.get("len")?.as_u64()?).ok()?,
        )
        .ok()?,
        // A /32 is listed as a plain address.
        None => Ipv4Net::from(right.as_str()?.parse::<std::net::Ipv4Addr>().ok()?),
    };
    Some(Match { net, negated })
}

/// What to do about table `ip kolach`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Keep,
    Replace,
    Delete,
}

/// `wanted`: the rules (ip-masq on) or None (off); `actual`: the table, None
/// when there is none. Anything but exactly our one chain with exactly the
/// wanted rules is replaced.
pub fn plan(wanted: Option<&[Rule]>, actual: Option<&Table>) -> Action {
    match (wanted, actual) {
        (None, None) => Action::Keep,
        (None, Some(_)) => Action::Delete,
        (Some(_), None) => Action::Replace,
        (Some(w), Some(t)) => {
            let right = t.other == 0
                && matches!(t.chains.as_slice(), [c] if c.name == CHAIN
                    && c.base == Some(("nat".into(), "postrouting".into(), SRCNAT, "accept".into()))
                    && c.rules.iter().copied().eq(w.iter().copied().map(Some)));
            if right {
                Action::Keep
            } else {
                Action::Replace
            }
        }
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Makes table `ip kolach` hold `wanted` (None: no table). Returns the
/// changes made (0 or 1), or one line for the status.
pub async fn sync(r: &dyn Runner, wanted: Option<&[Rule]>) -> Result<usize, String> {
    let list = args(&["-j", "list", "table", FAMILY, TABLE]);
    let actual = match r.run("nft", &list, None).await {
        Ok(out) if out.success => match parse(&out.stdout) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(error = %e, "table ip kolach unreadable; replacing it");
                Some(Table {
                    other: 1,
                    ..Default::default()
                })
            }
        },
        Ok(out) if out.stderr.contains("No such file or directory") => None,
        Ok(out) if wanted.is_none() => {
            tracing::debug!(error = %out.why(), "cannot list table ip kolach; ip-masq is off");
            return Ok(0);
        }
        Ok(out) => return Err(format!("ip-masq: nft list table ip kolach: {}", out.why())),
        Err(e @ RunError::NotFound { .. }) if wanted.is_none() => {
            tracing::debug!(error = %e, "no nft: no table ip kolach to remove");
            return Ok(0);
        }
        Err(e) => return Err(format!("ip-masq: {e}")),
    };
    let script = match plan(wanted, actual.as_ref()) {
        Action::Keep => return Ok(0),
        Action::Replace => replace_script(wanted.unwrap_or_default()),
        Action::Delete => delete_script(),
    };
    let out = r
        .run("nft", &args(&["-f", "-"]), Some(&script))
        .await
        .map_err(|e| format!("ip-masq: {e}"))?;
    if !out.success {
        return Err(format!("ip-masq: nft -f refused the table: {}", out.why()));
    }
    match wanted {
        Some(w) => tracing::info!(rules = w.len(), "table ip kolach (ip-masq) written"),
        None => tracing::info!("table ip kolach (ip-masq) removed"),
    }
    Ok(1)
}
