//! An unprivileged local user against the daemons' sockets: `kolach-intruder`
//! run as uid/gid 65534 (nobody) with `setpriv`, and the socket modes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::bins;
use crate::cmd;

/// The uid (and gid) the intruder runs as.
pub const NOBODY: u32 = 65534;
pub const INTRUDER: &str = "kolach-intruder";

/// A copy of kolach-intruder in `dir` that nobody may run (the build
/// tree may sit under a home directory nobody cannot enter).
fn runnable_copy(dir: &Path) -> Result<std::path::PathBuf> {
    let copy = dir.join(INTRUDER);
    if !copy.is_file() {
        std::fs::copy(bins::require(INTRUDER), &copy)
            .with_context(|| format!("copying {INTRUDER} to {}", dir.display()))?;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(copy)
}

/// Runs `kolach-intruder <args>` as nobody (a copy of it in `dir`, which
/// nobody must be able to enter); returns its one line.
pub fn run_as_nobody(dir: &Path, args: &[&str], timeout: Duration) -> Result<String> {
    run_as_nobody_in(dir, &[], args, timeout)
}

/// [`run_as_nobody`] with supplementary groups (none: `--clear-groups`).
pub fn run_as_nobody_in(
    dir: &Path,
    groups: &[u32],
    args: &[&str],
    timeout: Duration,
) -> Result<String> {
    let bin = runnable_copy(dir)?.display().to_string();
    let uid = format!("--reuid={NOBODY}");
    let gid = format!("--regid={NOBODY}");
    let groups = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        format!("--groups={}", list.join(","))
    };
    let mut full = vec![uid.as_str(), gid.as_str(), groups.as_str(), "--", &bin];
    full.extend_from_slice(args);
    let out = cmd::run("setpriv", &full, timeout)?;
    let line = out.stdout.trim().to_string();
    if line.is_empty() {
        bail!(
            "kolach-intruder {} printed nothing ({}): {}",
            args.join(" "),
            out.status,
            out.stderr.trim()
        );
    }
    Ok(line)
}

/// Mode bits (0o7777) and owner of a file.
pub fn mode_and_owner(path: &Path) -> Result<(u32, u32, u32)> {
    let m = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    Ok((m.permissions().mode() & 0o7777, m.uid(), m.gid()))
}

/// Whether a mode is 0660 or tighter: nothing for others, no execute or
/// special bits.
pub fn at_most_0660(mode: u32) -> bool {
    mode & !0o660 == 0
}

/// Runs `f` with `path` set to `mode`, then restores the mode it had (as if
/// the intruder were in the socket's group).
pub fn with_mode<T>(path: &Path, mode: u32, f: impl FnOnce() -> T) -> Result<T> {
    let (old, _, _) = mode_and_owner(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    let r = f();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(old))?;
    Ok(r)
}

/// The summary `kolach-intruder idle` prints.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize)]
pub struct IdleReport {
    pub opened: u64,
    pub failed: u64,
    pub closed_at_once: u64,
    pub closed_later: u64,
    pub first_closed_later_ms: u64,
    pub open_at_end: u64,
}

pub fn parse_idle(line: &str) -> Result<IdleReport> {
    serde_json::from_str(line).with_context(|| format!("kolach-intruder idle printed {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert!(at_most_0660(0o660));
        assert!(at_most_0660(0o600));
        assert!(!at_most_0660(0o666));
        assert!(!at_most_0660(0o670));
        assert!(!at_most_0660(0o4660));
        let r = parse_idle(r#"{"opened":3,"failed":0,"closed_at_once":1,"closed_later":2,"first_closed_later_ms":5012,"open_at_end":0}"#).unwrap();
        assert_eq!((r.opened, r.closed_later), (3, 2));
    }
}
