//! Which executable this process runs, and whether the file at its path is
//! still that one. A package upgrade renames a new file over the old path;
//! `/proc/self/exe` then names the old, deleted inode, so the path is
//! remembered at start and the hot upgrade re-executes it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kolach_proto::dataplane as pb;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryId {
    pub path: PathBuf,
    pub device: u64,
    pub inode: u64,
    pub size: u64,
    pub mtime_unix: i64,
}

/// What the kernel says after an executable was replaced: `<path> (deleted)`.
const DELETED: &str = " (deleted)";

/// The path part of a `/proc/self/exe` link target.
pub fn exe_path(link: &Path) -> PathBuf {
    let s = link.to_string_lossy();
    match s.strip_suffix(DELETED) {
        Some(p) => PathBuf::from(p),
        None => link.to_path_buf(),
    }
}

impl BinaryId {
    /// The running executable: the inode behind `/proc/self/exe` (even if
    /// deleted) and the path it was started from.
    pub fn running() -> std::io::Result<BinaryId> {
        let link = std::fs::read_link("/proc/self/exe")?;
        let meta = std::fs::metadata("/proc/self/exe")?;
        Ok(BinaryId::from_meta(exe_path(&link), &meta))
    }

    /// The file at `path` now.
    pub fn at(path: &Path) -> std::io::Result<BinaryId> {
        let meta = std::fs::metadata(path)?;
        Ok(BinaryId::from_meta(path.to_path_buf(), &meta))
    }

    fn from_meta(path: PathBuf, m: &std::fs::Metadata) -> BinaryId {
        BinaryId {
            path,
            device: m.dev(),
            inode: m.ino(),
            size: m.size(),
            mtime_unix: m.mtime(),
        }
    }

    /// Same file contents as far as the kernel can tell (the path aside).
    pub fn same_file(&self, other: &BinaryId) -> bool {
        (self.device, self.inode, self.size, self.mtime_unix)
            == (other.device, other.inode, other.size, other.mtime_unix)
    }

    /// Whether the file at our path is another one now (or gone).
    pub fn changed_on_disk(&self) -> bool {
        BinaryId::at(&self.path).map_or(true, |now| !self.same_file(&now))
    }

    pub fn to_pb(&self, changed_on_disk: bool) -> pb::Binary {
        pb::Binary {
            path: self.path.display().to_string(),
            device: self.device,
            inode: self.inode,
            size: self.size,
            mtime_unix: self.mtime_unix,
            changed_on_disk,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_suffix_is_dropped() {
        assert_eq!(
            exe_path(Path::new("/usr/bin/kolach-dataplaned (deleted)")),
            PathBuf::from("/usr/bin/kolach-dataplaned")
        );
        assert_eq!(exe_path(Path::new("/a/b")), PathBuf::from("/a/b"));
    }

    #[test]
    fn running_binary_is_the_test_executable() {
        let me = BinaryId::running().unwrap();
        assert_eq!(me.path, std::env::current_exe().unwrap());
        assert!(!me.changed_on_disk());
        assert!(me.size > 0);
    }

    #[test]
    fn a_replaced_file_is_noticed() {
        let dir = std::env::temp_dir().join(format!("kdp-binary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("prog");
        std::fs::write(&path, b"one").unwrap();
        let first = BinaryId::at(&path).unwrap();
        assert!(!first.changed_on_disk());
        // Replaced the way package managers do it: a new file renamed over.
        let tmp = dir.join("prog.new");
        std::fs::write(&tmp, b"two, longer").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(first.changed_on_disk());
        let second = BinaryId::at(&path).unwrap();
        assert!(!first.same_file(&second));
        let p = second.to_pb(false);
        assert_eq!((p.size, p.inode), (11, second.inode));
        std::fs::remove_file(&path).unwrap();
        assert!(second.changed_on_disk());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
