//! A directory of one test under the temp dir, `kdp-<tag>-<n>-<pid>` (so
//! `kolach-lab sweep` removes those of runs that died), removed on drop:
//! run dirs of in-process daemons, data of a loopback etcd.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::names::DATAPLANED_TEST_PREFIX;

/// The directory; kept after the test with `KOLACH_TEST_KEEP=1` (or
/// dataplaned's `KDP_KEEP=1`), to read daemon logs after a failure.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh, empty directory (a leftover of the same name is removed).
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("{DATAPLANED_TEST_PREFIX}{tag}-{n}-{}", std::process::id());
        let p = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// Whether test dirs are kept for reading after the test.
pub fn keep() -> bool {
    std::env::var_os("KOLACH_TEST_KEEP").is_some() || std::env::var_os("KDP_KEEP").is_some()
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !keep() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::owner_pid;

    #[test]
    fn unique_swept_and_removed() {
        let a = TempDir::new("t");
        let b = TempDir::new("t");
        assert_ne!(a.path(), b.path());
        assert!(a.path().is_dir());
        let name = a.path().file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(owner_pid(&name), Some(std::process::id()));
        let p = a.path().to_path_buf();
        drop(a);
        assert_eq!(p.exists(), keep());
    }
}
