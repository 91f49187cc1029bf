//! The Debian package under test: `packaging/deb/build` run on the binaries
//! the tests use (the debug build; `make deb` runs it on the release build),
//! and `lintian` on the result.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::bins;
use crate::cmd;

/// The kolach-docgen binary (man pages and completions).
pub const DOCGEN: &str = "kolach-docgen";

/// `packaging/deb/build`.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/deb/build")
}

/// Builds `kolach_<version>-<revision>_<arch>.deb` into `out` from the
/// binaries next to kolach-controld (gzip: quick to make and to unpack).
pub fn build(out: &Path, revision: u32) -> Result<PathBuf> {
    let controld = bins::require(bins::CONTROLD);
    let bin_dir = controld.parent().context("binary dir")?;
    let docgen = bins::require(DOCGEN);
    let args = [
        "--bins".to_string(),
        bin_dir.display().to_string(),
        "--docgen".to_string(),
        docgen.display().to_string(),
        "--out".to_string(),
        out.display().to_string(),
        "--revision".to_string(),
        revision.to_string(),
        "--compress".to_string(),
        "gzip".to_string(),
    ];
    let script = build_script();
    let done = cmd::run(&script.to_string_lossy(), &args, Duration::from_secs(300))?;
    if !done.success() {
        bail!(
            "packaging/deb/build failed ({}):\n{}",
            done.status,
            done.stderr
        );
    }
    let deb = PathBuf::from(done.stdout.trim());
    if !deb.is_file() {
        bail!(
            "packaging/deb/build printed {:?}, which is no file",
            done.stdout.trim()
        );
    }
    Ok(deb)
}

/// `dpkg -c`: the package's files.
pub fn contents(deb: &Path) -> Result<String> {
    cmd::run_ok("dpkg", &["-c".as_ref(), deb.as_os_str()])
}

/// What `lintian` said, and whether it found errors (`--fail-on error`).
pub struct Lintian {
    pub output: String,
    pub errors: Vec<String>,
}

pub fn lintian(deb: &Path) -> Result<Lintian> {
    let out = cmd::run(
        "lintian",
        &["--fail-on".as_ref(), "error".as_ref(), deb.as_os_str()],
        Duration::from_secs(300),
    )
    .context("lintian (Debian package lintian; `make deps`)")?;
    let output = format!("{}{}", out.stdout, out.stderr);
    let errors: Vec<String> = output
        .lines()
        .filter(|l| l.starts_with("E: "))
        .map(str::to_string)
        .collect();
    if !out.success() && errors.is_empty() {
        bail!(
            "lintian failed without naming an error ({}):\n{output}",
            out.status
        );
    }
    Ok(Lintian { output, errors })
}
