//! Finding the kolach binaries under test: `$KOLACH_BIN_DIR`, else the cargo
//! target dir the running executable lives in (target/debug for both the
//! test executables in target/debug/deps and `kolach-lab` itself).

use std::path::{Path, PathBuf};

pub const CONTROLD: &str = "kolach-controld";
pub const DATAPLANED: &str = "kolach-dataplaned";
pub const KOLACHCTL: &str = "kolachctl";
/// Writes the man pages and completions (packaging/docgen).
pub const DOCGEN: &str = "kolach-docgen";

/// Directories searched, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("KOLACH_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(exe.ancestors().skip(1).take(3).map(Path::to_path_buf));
    }
    dirs
}

/// The path of binary `name`, or None.
pub fn find(name: &str) -> Option<PathBuf> {
    search_dirs()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The path of binary `name` if found, else `name` itself (checked at start).
pub fn find_or_name(name: &str) -> PathBuf {
    find(name).unwrap_or_else(|| PathBuf::from(name))
}

/// The path of binary `name`; panics with what to do when it is missing.
pub fn require(name: &str) -> PathBuf {
    find(name).unwrap_or_else(|| {
        panic!(
            "{name} not found in {:?}: run `cargo build --workspace` first \
             (or point KOLACH_BIN_DIR at the directory holding it)",
            search_dirs()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_includes_exe_dir() {
        let exe = std::env::current_exe().unwrap();
        assert!(search_dirs().contains(&exe.parent().unwrap().to_path_buf()));
    }

    #[test]
    #[should_panic(expected = "run `cargo build --workspace` first")]
    fn missing_binary_says_what_to_do() {
        require("kolach-no-such-binary");
    }
}
