//! Forward rules (flannel's `-iptables-forward-rules`): Docker sets the
//! FORWARD policy of iptables' filter table to DROP, which drops every
//! packet between a peer and a pod here. kolach appends
//! `-A FORWARD -s NET -j ACCEPT` and `-A FORWARD -d NET -j ACCEPT`, each
//! tagged with a comment that starts `kolach:`, to that same chain (an
//! accept in a base chain of our own would not undo its drop).
//!
//! Written with the `iptables` binary, so the table stays one iptables-nft
//! (and Docker) can read; never with raw nft. Only tagged rules are ever
//! removed: [`plan`] (pure) compares `iptables -S FORWARD` with the wanted
//! rules and returns the deletions of our stale ones (an old Network) and
//! the appends of the missing ones. A FORWARD chain that is empty and
//! accepts (or none at all: `iptables -S` shows the same) needs nothing, so
//! no chain is made where no firewall is; the periodic recheck adds the
//! rules once something (Docker) puts a policy or rules there.

use ipnet::Ipv4Net;

use super::{RunError, Runner};

pub const CHAIN: &str = "FORWARD";
/// Every comment of ours starts so; what does not is never touched.
pub const TAG: &str = "kolach:";

/// A rule as `iptables -S` prints it after `-A FORWARD`, as words.
pub type Spec = Vec<String>;

fn spec(words: &[&str]) -> Spec {
    words.iter().map(|w| w.to_string()).collect()
}

/// The wanted rules for `network`, each as `iptables -S` prints it (so a
/// listing compares word by word).
pub fn rules(network: Ipv4Net) -> Vec<Spec> {
    let net = network.to_string();
    vec![
        spec(&[
            "-s",
            &net,
            "-m",
            "comment",
            "--comment",
            "kolach: forward from the overlay",
            "-j",
            "ACCEPT",
        ]),
        spec(&[
            "-d",
            &net,
            "-m",
            "comment",
            "--comment",
            "kolach: forward to the overlay",
            "-j",
            "ACCEPT",
        ]),
    ]
}

/// The FORWARD chain as `iptables -S FORWARD` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub policy: String,
    pub rules: Vec<Spec>,
}

/// Splits a line of `iptables -S` into words: double quotes group (the
/// comment), a backslash escapes the next character inside them.
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut any) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            '\\' if quoted => cur.extend(chars.next()),
            c if c.is_whitespace() && !quoted => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Reads `iptables -S FORWARD`.
pub fn parse(text: &str) -> Listing {
    let mut l = Listing::default();
    for line in text.lines() {
        let w = words(line);
        match w.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["-P", CHAIN, policy] => l.policy = policy.to_string(),
            ["-A", CHAIN, ..] => l.rules.push(w[2..].to_vec()),
            _ => {}
        }
    }
    l
}

/// Whether a rule carries our tag.
pub fn is_ours(rule: &Spec) -> bool {
    rule.windows(2)
        .any(|p| p[0] == "--comment" && p[1].starts_with(TAG))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Append(Spec),
    Delete(Spec),
}

impl Op {
    /// The `iptables` arguments.
    pub fn args(&self) -> Vec<String> {
        let (flag, s) = match self {
            Op::Append(s) => ("-A", s),
            Op::Delete(s) => ("-D", s),
        };
        [flag.to_string(), CHAIN.to_string()]
            .into_iter()
            .chain(s.iter().cloned())
            .collect()
    }
}

/// The changes that leave exactly `wanted` of our tagged rules in the
/// chain: stale ones (and duplicates) deleted first, missing ones
/// appended; untagged rules never. None: the chain is empty and accepts,
/// nothing to do there.
pub fn plan(wanted: &[Spec], actual: &Listing) -> Option<Vec<Op>> {
    if actual.rules.is_empty() && actual.policy == "ACCEPT" {
        return None;
    }
    let mut ops = Vec::new();
    let mut seen: Vec<&Spec> = Vec::new();
    for r in actual.rules.iter().filter(|r| is_ours(r)) {
        if wanted.contains(r) && !seen.contains(&r) {
            seen.push(r);
        } else {
            ops.push(Op::Delete(r.clone()));
        }
    }
    ops.extend(
        wanted
            .iter()
            .filter(|w| !seen.contains(w))
            .map(|w| Op::Append(w.clone())),
    );
    Some(ops)
}

/// Forward rules wanted but no `iptables` binary: nothing uses iptables
/// then (Docker needs it), unless its table is there anyway (an iptables-nft
/// `ip filter` table with a FORWARD chain, read with nft if it is
/// installed): only then is it worth a warning.
async fn without_iptables(r: &dyn Runner, e: RunError) -> Result<usize, String> {
    let args: Vec<String> = ["list", "chain", "ip", "filter", CHAIN]
        .iter()
        .map(|s| s.to_string())
        .collect();
    match r.run("nft", &args, None).await {
        Ok(out) if out.success => Err(format!(
            "forward rules: {e}; table ip filter has a FORWARD chain that may drop the overlay's traffic"
        )),
        _ => {
            tracing::debug!(error = %e, "no iptables and no iptables FORWARD chain: no forward rules needed");
            Ok(0)
        }
    }
}

/// Makes the FORWARD chain hold exactly `wanted` of our rules (`on`:
/// forward rules are asked for; off, only our rules are removed). Returns
/// the changes made, or one line for the status.
pub async fn sync(r: &dyn Runner, wanted: &[Spec], on: bool) -> Result<usize, String> {
    let list = vec!["-S".to_string(), CHAIN.to_string()];
    let actual = match r.run("iptables", &list, None).await {
        Ok(out) if out.success => parse(&out.stdout),
        Ok(out) if !on => {
            tracing::debug!(error = %out.why(), "cannot list the FORWARD chain; forward rules are off");
            return Ok(0);
        }
        Ok(out) if out.stderr.contains("No chain") || out.stderr.contains("does not exist") => {
            tracing::debug!(error = %out.why(), "no FORWARD chain: no forward rules needed");
            return Ok(0);
        }
        Ok(out) => return Err(format!("forward rules: iptables -S FORWARD: {}", out.why())),
        Err(e @ RunError::NotFound { .. }) if !on => {
            tracing::debug!(error = %e, "no iptables: no forward rules to remove");
            return Ok(0);
        }
        Err(e @ RunError::NotFound { .. }) => return without_iptables(r, e).await,
        Err(e) => return Err(format!("forward rules: {e}")),
    };
    let Some(ops) = plan(wanted, &actual) else {
        tracing::debug!("FORWARD chain empty and accepting: no forward rules needed");
        return Ok(0);
    };
    let mut changes = 0;
    for op in ops {
        let out = r
            .run("iptables", &op.args(), None)
            .await
            .map_err(|e| format!("forward rules: {e}"))?;
        if !out.success {
            return Err(format!(
                "forward rules: iptables {}: {}",
                op.args().join(" "),
                out.why()
            ));
        }
        changes += 1;
        tracing::info!(rule = %op.args().join(" "), "FORWARD chain updated");
    }
    Ok(changes)
}
