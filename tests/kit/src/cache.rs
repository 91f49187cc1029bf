//! Things slow to make that the tests use, kept across runs in
//! `<target dir>/cache` (`make deps` fills it; a fresh machine rebuilds it):
//! the venv holding moto, the Debian tree the systemd containers boot.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

/// `$<env>` if set (it must pass `ok`), else the first `<dir>/cache/<name>`
/// that passes `ok`, for the target dirs the running executable lives in and
/// the workspace's `target/`. `make` says how to make it when none does.
pub fn find(name: &str, env: &str, make: &str, ok: impl Fn(&Path) -> bool) -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(env) {
        let d = PathBuf::from(d);
        if ok(&d) {
            return Ok(d);
        }
        bail!("{env}={} is not usable as {name}", d.display());
    }
    let rel = Path::new("cache").join(name);
    let mut tried = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        tried.extend(exe.ancestors().skip(1).take(3).map(|a| a.join(&rel)));
    }
    tried.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target")
            .join(&rel),
    );
    tried.into_iter().find(|d| ok(d)).ok_or_else(|| {
        anyhow!("{name} not found in <target dir>/cache: {make} (or point {env} at one)")
    })
}
