//! Checking the units in `packaging/systemd` without a running systemd:
//! `systemd-analyze verify` on copies whose binary paths point at the build,
//! the exposure score of `systemd-analyze security --offline=true`, and
//! whether syscalls (as `strace -f` saw them) pass a unit's
//! `SystemCallFilter=` (resolved with `systemd-analyze syscall-filter`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::bins;
use crate::cmd;

/// `packaging/systemd` in the source tree.
pub fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/systemd")
}

/// The unit's text with `/usr/bin/<kolach binary>` replaced by the built one.
pub fn with_built_binaries(unit: &str) -> String {
    let mut s = unit.to_string();
    for name in [bins::DATAPLANED, bins::CONTROLD, bins::KOLACHCTL] {
        let built = bins::require(name);
        s = s.replace(&format!("/usr/bin/{name}"), &built.to_string_lossy());
    }
    s
}

/// Copies the units to `dir` with the built binaries' paths; returns the copies.
pub fn copy_units(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(units_dir())? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "service") {
            let text = std::fs::read_to_string(&p)?;
            let to = dir.join(p.file_name().context("unit name")?);
            std::fs::write(&to, with_built_binaries(&text))?;
            out.push(to);
        }
    }
    out.sort();
    Ok(out)
}

fn analyze(args: &[&str]) -> Result<cmd::Output> {
    cmd::run("systemd-analyze", args, Duration::from_secs(60))
        .context("systemd-analyze is needed to check the units (Debian package systemd)")
}

/// The man pages the package ships, written by the built `kolach-docgen
/// --out <dir>` (as the package build runs it); returns `<dir>/man`, a
/// MANPATH entry holding the pages the units name.
pub fn generate_man_pages(dir: &Path) -> Result<PathBuf> {
    let docgen = bins::require(bins::DOCGEN);
    let out = cmd::run(
        &docgen.to_string_lossy(),
        &[std::ffi::OsStr::new("--out"), dir.as_os_str()],
        Duration::from_secs(60),
    )?;
    if !out.success() {
        bail!(
            "kolach-docgen --out {}: {}",
            dir.display(),
            out.stderr.trim()
        );
    }
    Ok(dir.join("man"))
}

/// `systemd-analyze verify <units>`: its complaints, if any. The units'
/// `Documentation=man:` pages are looked up in `man_dir` (as installed), so
/// `man` must be there.
pub fn verify(units: &[PathBuf], man_dir: &Path) -> Result<Option<String>> {
    let manpath = format!("MANPATH={}", man_dir.display());
    let mut args = vec![manpath, "systemd-analyze".to_string(), "verify".to_string()];
    args.extend(units.iter().map(|u| u.display().to_string()));
    let out = cmd::run("env", &args, Duration::from_secs(60))?;
    let said = format!("{}{}", out.stdout, out.stderr);
    Ok((!out.success() || !said.trim().is_empty()).then_some(said))
}

/// The overall exposure level from `systemd-analyze security` output.
pub fn parse_exposure(text: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.contains("Overall exposure level"))?
        .rsplit_once(':')?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `systemd-analyze security --offline=true <unit>`: the exposure level.
pub fn exposure(unit: &Path) -> Result<f64> {
    let u = unit.display().to_string();
    let out = analyze(&["security", "--offline=true", &u])?;
    parse_exposure(&out.stdout)
        .with_context(|| format!("no exposure level in:\n{}{}", out.stdout, out.stderr))
}

/// The unit's `SystemCallFilter=` lines: what is allowed, then what is taken
/// away (`~`), as written (groups and names).
pub fn filter_lines(unit: &str) -> (Vec<String>, Vec<String>) {
    let (mut allow, mut deny) = (Vec::new(), Vec::new());
    for line in unit.lines() {
        let Some(v) = line.trim().strip_prefix("SystemCallFilter=") else {
            continue;
        };
        match v.strip_prefix('~') {
            Some(d) => deny.extend(d.split_whitespace().map(str::to_string)),
            None => allow.extend(v.split_whitespace().map(str::to_string)),
        }
    }
    (allow, deny)
}

/// The syscalls a group (or a single name) stands for, per systemd-analyze.
pub fn expand(item: &str) -> Result<BTreeSet<String>> {
    if !item.starts_with('@') {
        return Ok(BTreeSet::from([item.to_string()]));
    }
    let out = analyze(&["syscall-filter", item])?;
    if !out.success() {
        bail!(
            "systemd-analyze syscall-filter {item}: {}",
            out.stderr.trim()
        );
    }
    let mut set = BTreeSet::new();
    for line in out.stdout.lines().skip(1) {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        set.extend(expand(l)?);
    }
    Ok(set)
}

/// Every syscall the unit's filter lets through. As systemd reads an allow
/// list: line by line, `~` lines take away and later plain lines add back.
pub fn allowed_syscalls(unit: &str) -> Result<BTreeSet<String>> {
    let mut set = BTreeSet::new();
    for line in unit.lines() {
        let Some(v) = line.trim().strip_prefix("SystemCallFilter=") else {
            continue;
        };
        match v.strip_prefix('~') {
            Some(deny) => {
                for item in deny.split_whitespace() {
                    for s in expand(item)? {
                        set.remove(&s);
                    }
                }
            }
            None => {
                for item in v.split_whitespace() {
                    set.extend(expand(item)?);
                }
            }
        }
    }
    Ok(set)
}

/// The syscall names in `strace -f` output.
pub fn strace_syscalls(text: &str) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let (Some(_pid), Some(call)) = (w.next(), w.next()) else {
            continue;
        };
        let name = if call == "<..." {
            w.next().unwrap_or_default()
        } else {
            call.split('(').next().unwrap_or_default()
        };
        if !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            set.insert(name.to_string());
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_exposure() {
        let text = "✗ UMask= ...   0.1\n\n→ Overall exposure level for kolach-dataplaned.service: 2.3 OK 🙂\n";
        assert_eq!(parse_exposure(text), Some(2.3));
        assert_eq!(parse_exposure("nothing"), None);
    }

    #[test]
    fn reads_filter_lines() {
        let unit = "[Service]\nSystemCallFilter=@system-service\nSystemCallFilter=~@privileged @resources\n";
        let (a, d) = filter_lines(unit);
        assert_eq!(a, ["@system-service"]);
        assert_eq!(d, ["@privileged", "@resources"]);
    }

    #[test]
    fn reads_strace_output() {
        let text = "123  execve(\"/bin/x\", [\"x\"], 0x7ffc /* 3 vars */) = 0\n\
            123  <... clone3 resumed>) = 124\n\
            124  +++ exited with 0 +++\n\
            123  --- SIGCHLD {si_signo=SIGCHLD} ---\n\
            125  sendmsg(5, {msg_name=...}, 0) = 12\n";
        let s = strace_syscalls(text);
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            ["clone3", "execve", "sendmsg"]
        );
    }
}
