//! The host firewall kolach keeps (controld `--ip-masq` and
//! `--iptables-forward-rules`, flannel's two flags), reconciled like the
//! routes: a pure plan from what the snapshot wants and what the kernel
//! shows, then only the difference is carried out; never flushed, kept when
//! the daemon stops, removed by `--cleanup`.
//!
//! - [`masq`]: flannel's masquerade rules in nftables table `ip kolach`
//!   (a nat chain at srcnat priority), a table of kolach's own, replaced
//!   whole in one `nft -f` transaction when it differs.
//! - [`forward`]: `-A FORWARD -s/-d <Network> -j ACCEPT`, tagged
//!   `kolach: ...`, in iptables' filter table, where a DROP policy (Docker's)
//!   sits: an accept in another base chain would not override that drop.
//!
//! Both talk to the kernel through the distribution's own tools, `nft` (JSON
//! out, a script in) and `iptables`, behind the [`Runner`] seam. Why not
//! netlink: nf_tables' netlink messages are bytecode (registers, payload
//! offsets), which no well-kept Rust crate turns into rules and back as
//! reliably as libnftables does, and the FORWARD rules must be written the way
//! iptables-nft writes them (its own match encodings, the table it marks as
//! its own), or iptables and Docker would no longer read their table: only
//! the `iptables` binary writes those. A missing binary costs only what
//! needs it (one error line, naming the package); routes are applied anyway.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use ipnet::Ipv4Net;
use kolach_proto::dataplane as pb;

use crate::snapshot::ValidSnapshot;

pub mod forward;
pub mod masq;

/// How often the rules are checked between snapshots: Docker re-creates its
/// chains when it restarts, and someone may flush a table (flannel: 5 s).
pub const RECHECK: Duration = Duration::from_secs(5);
/// One run of `nft` or `iptables`, at most.
const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the applied snapshot asks of the firewall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub network: Ipv4Net,
    pub subnet: Ipv4Net,
    pub ip_masq: bool,
    pub forward_rules: bool,
}

impl Wanted {
    pub fn of(s: &ValidSnapshot) -> Wanted {
        Wanted {
            network: s.network,
            subnet: s.local_subnet,
            ip_masq: s.ip_masq,
            forward_rules: s.forward_rules,
        }
    }

    /// As `DataplaneStatus.firewall` shows it.
    pub fn to_pb(self) -> pb::Firewall {
        pb::Firewall {
            ip_masq: self.ip_masq,
            masq_table: format!("{} {}", masq::FAMILY, masq::TABLE),
            forward_rules: self.forward_rules,
            forward_chain: forward::CHAIN.to_string(),
        }
    }
}

/// What a program run printed, and whether it exited 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The first line of stderr (nft and iptables say what went wrong there).
    pub fn why(&self) -> String {
        self.stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("failed without a message")
            .trim()
            .to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program is not installed.
    #[error("{program} not found (install the Debian package {package})")]
    NotFound {
        program: String,
        package: &'static str,
    },
    #[error("cannot run {program}: {source}")]
    Io {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} did not finish within {RUN_TIMEOUT:?}")]
    Timeout { program: String },
}

/// Runs the firewall tools; faked in the tests.
pub trait Runner: Send + Sync {
    /// Runs `program` with `args`, `stdin` written to its standard input.
    fn run<'a>(
        &'a self,
        program: &'a str,
        args: &'a [String],
        stdin: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Output, RunError>>;
}

/// The real tools, found in PATH or, failing that, in /usr/sbin and /sbin
/// (a non-root PATH on Debian lacks them).
pub struct System;

/// The Debian package that ships `program`.
fn package(program: &str) -> &'static str {
    match program {
        "nft" => "nftables",
        "iptables" => "iptables",
        _ => "?",
    }
}

fn locate(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

impl Runner for System {
    fn run<'a>(
        &'a self,
        program: &'a str,
        args: &'a [String],
        stdin: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Output, RunError>> {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            let io = |source| RunError::Io {
                program: program.to_string(),
                source,
            };
            let path = locate(program).ok_or_else(|| RunError::NotFound {
                program: program.to_string(),
                package: package(program),
            })?;
            let mut child = tokio::process::Command::new(path)
                .args(args)
                .stdin(if stdin.is_some() {
                    std::process::Stdio::piped()
                } else {
                    std::process::Stdio::null()
                })
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(io)?;
            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(text.as_bytes()).await.map_err(io)?;
            }
            let out = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
                .await
                .map_err(|_| RunError::Timeout {
                    program: program.to_string(),
                })?
                .map_err(io)?;
            Ok(Output {
                success: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        })
    }
}

/// What one sync did: changes made, and problems for the status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub changes: usize,
    pub errors: Vec<String>,
}

/// Makes the firewall match `wanted` (called only once a snapshot is
/// applied: before that nothing is touched). Never fails the apply: routes
/// do not depend on it, so problems are reported and the next sync (a
/// snapshot or [`RECHECK`]) tries again.
pub async fn sync(r: &dyn Runner, wanted: &Wanted) -> Report {
    let mut report = Report::default();
    let masq = wanted
        .ip_masq
        .then(|| masq::rules(wanted.network, wanted.subnet));
    match masq::sync(r, masq.as_deref()).await {
        Ok(n) => report.changes += n,
        Err(e) => report.errors.push(e),
    }
    let fwd = if wanted.forward_rules {
        forward::rules(wanted.network)
    } else {
        Vec::new()
    };
    match forward::sync(r, &fwd, wanted.forward_rules).await {
        Ok(n) => report.changes += n,
        Err(e) => report.errors.push(e),
    }
    report
}

/// `--cleanup`: removes table `ip kolach` and every tagged FORWARD rule.
/// Missing tools mean there is nothing of ours to remove.
pub async fn cleanup(r: &dyn Runner) -> Vec<String> {
    let mut errors = Vec::new();
    if let Err(e) = masq::sync(r, None).await {
        errors.push(e);
    }
    if let Err(e) = forward::sync(r, &[], false).await {
        errors.push(e);
    }
    errors
}

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;
