//! kolach-docgen: man pages and shell completions rendered from the same
//! definitions as each binary's `--help`, so the package's documentation
//! cannot drift from the binaries.
//!
//! - [`binaries`]: every binary's clap `Command` and its manual sections
//!   (`MANUAL` next to its flags); the CNI plugin, which has no flags, gets a
//!   `Command` built from its `doc` module.
//! - [`man`]: a page per binary (and per kolachctl subcommand), section 8,
//!   with no date so the package builds reproducibly.
//! - [`completions`]: bash, zsh and fish scripts for the three binaries a
//!   person types.

#![forbid(unsafe_code)]

pub mod binaries;
pub mod completions;
pub mod man;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `out/man/man8/*.8` and `out/completions/{bash,zsh,fish}/*`;
/// returns the files written.
pub fn generate(out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man_dir = out.join("man").join("man8");
    create_dir(&man_dir)?;
    for page in man::pages() {
        let path = man_dir.join(&page.file_name);
        write(&path, &page.roff)?;
        written.push(path);
    }
    for script in completions::scripts() {
        let path = out.join("completions").join(&script.path);
        create_dir(path.parent().context("a script's directory")?)?;
        write(&path, &script.text)?;
        written.push(path);
    }
    Ok(written)
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests;
