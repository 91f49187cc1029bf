//! The last applied snapshot on disk (`<run-dir>/snapshot.pb`), so a restarted
//! dataplane forwards again before controld is back.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use kolach_proto::dataplane::Snapshot;
use prost::Message;

pub const SNAPSHOT_FILE: &str = "snapshot.pb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} is not a valid snapshot: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error("{} belongs to uid {uid}, not to this daemon: not trusted", path.display())]
    Untrusted { path: PathBuf, uid: u32 },
}

pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join(SNAPSHOT_FILE)
}

/// Writes the snapshot atomically: a temp file in the same directory, fsync,
/// rename over the old file, fsync of the directory.
pub fn save(run_dir: &Path, snapshot: &Snapshot) -> Result<(), StoreError> {
    let target = path(run_dir);
    let tmp = run_dir.join(format!(".{SNAPSHOT_FILE}.{}.tmp", std::process::id()));
    let werr = |source| StoreError::Write {
        path: target.clone(),
        source,
    };
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(&snapshot.encode_to_vec())?;
        f.sync_all()?;
        fs::rename(&tmp, &target)?;
        File::open(run_dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        werr(e)
    })
}

/// Reads the saved snapshot; Ok(None) when there is none. Only a file this
/// daemon's user (or root) owns is trusted: the run dir is writable by group
/// kolach, whose members must not be able to plant a table.
pub fn load(run_dir: &Path) -> Result<Option<Snapshot>, StoreError> {
    use std::os::unix::fs::MetadataExt;
    let p = path(run_dir);
    let read = || -> io::Result<(u32, Vec<u8>)> {
        let mut f = File::open(&p)?;
        let uid = f.metadata()?.uid();
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut f, &mut bytes)?;
        Ok((uid, bytes))
    };
    let bytes = match read() {
        Ok((uid, _)) if uid != 0 && uid != nix::unistd::geteuid().as_raw() => {
            return Err(StoreError::Untrusted { path: p, uid })
        }
        Ok((_, b)) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StoreError::Read { path: p, source }),
    };
    Snapshot::decode(bytes.as_slice())
        .map(Some)
        .map_err(|source| StoreError::Corrupt { path: p, source })
}

/// Removes the saved snapshot; a missing file is not an error.
pub fn remove(run_dir: &Path) -> Result<(), StoreError> {
    let p = path(run_dir);
    match fs::remove_file(&p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(StoreError::Write { path: p, source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::good;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kdp-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn save_then_load_roundtrips() {
        let d = tmpdir("rt");
        assert!(load(&d).unwrap().is_none());
        let s = good();
        save(&d, &s).unwrap();
        assert_eq!(load(&d).unwrap(), Some(s.clone()));
        // Overwrite leaves no temp files behind.
        save(&d, &s).unwrap();
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SNAPSHOT_FILE)]);
        remove(&d).unwrap();
        remove(&d).unwrap();
        assert!(load(&d).unwrap().is_none());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_file_of_another_user_is_not_trusted() {
        let d = tmpdir("owner");
        save(&d, &good()).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        // Only root can give the file away; elsewhere the check is moot.
        if me == 0 {
            std::os::unix::fs::chown(path(&d), Some(65534), None).unwrap();
            assert!(matches!(
                load(&d),
                Err(StoreError::Untrusted { uid: 65534, .. })
            ));
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn corrupt_file_is_reported() {
        let d = tmpdir("corrupt");
        fs::write(path(&d), b"\xff\xff\xff not protobuf").unwrap();
        assert!(matches!(load(&d), Err(StoreError::Corrupt { .. })));
        fs::remove_dir_all(&d).unwrap();
    }
}
