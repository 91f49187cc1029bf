//! fds passed by systemd at start (sd_listen_fds(3)): `LISTEN_PID`,
//! `LISTEN_FDS` and `LISTEN_FDNAMES`, the way a restarted service gets back
//! what it put in the fd store.
//!
//! The variables are removed from the environment when read, as
//! `sd_listen_fds(1)` does: a hot upgrade keeps the PID, so a `LISTEN_PID`
//! left behind would make the next image take fds 3.. once more.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The first passed fd (SD_LISTEN_FDS_START).
pub const START: RawFd = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenFdsError {
    #[error("LISTEN_FDS={0:?} is not a count of fds")]
    BadCount(String),
}

/// A passed fd number and its `FDNAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub fd: RawFd,
    pub name: String,
}

/// Which fds the variables pass to process `pid`; none when they are meant
/// for another process (or absent). Names default to "unknown", as systemd's.
pub fn parse(
    pid: u32,
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    names: Option<&str>,
) -> Result<Vec<Passed>, ListenFdsError> {
    if listen_pid.and_then(|p| p.trim().parse::<u32>().ok()) != Some(pid) {
        return Ok(Vec::new());
    }
    let Some(count) = listen_fds else {
        return Ok(Vec::new());
    };
    let n: RawFd = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (0..=4096).contains(n))
        .ok_or_else(|| ListenFdsError::BadCount(count.to_string()))?;
    let names: Vec<&str> = names.map(|s| s.split(':').collect()).unwrap_or_default();
    let names_fit = names.len() == n as usize;
    Ok((0..n)
        .map(|i| Passed {
            fd: START + i,
            name: if names_fit {
                names[i as usize].to_string()
            } else {
                "unknown".to_string()
            },
        })
        .collect())
}

/// Takes the fds systemd passed to this process, close-on-exec, with their
/// names; removes the variables. Call before any thread starts (it changes
/// the environment).
pub fn take_from_env() -> Result<Vec<(String, OwnedFd)>, ListenFdsError> {
    let var = |k: &str| std::env::var(k).ok();
    let passed = parse(
        std::process::id(),
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
    );
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(k);
    }
    Ok(passed?
        .into_iter()
        .filter_map(|p| own(p.fd).map(|fd| (p.name, fd)))
        .collect())
}

/// Owns an inherited fd number if it is open, and makes it close-on-exec.
pub fn own(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD/F_SETFD on a number only read and set its flags; a
    // number that is not open fails with EBADF and is skipped.
    let ok = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) == 0
    };
    // SAFETY: the fd is open and was handed to this process to own (by
    // systemd or the previous image); nothing else in it refers to it.
    ok.then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(fd: RawFd, name: &str) -> Passed {
        Passed {
            fd,
            name: name.into(),
        }
    }

    #[test]
    fn fds_for_this_process() {
        assert_eq!(
            parse(42, Some("42"), Some("2"), Some("tun:udp")),
            Ok(vec![p(3, "tun"), p(4, "udp")])
        );
        // Names that do not fit the count are all "unknown".
        assert_eq!(
            parse(42, Some("42"), Some("2"), Some("tun")),
            Ok(vec![p(3, "unknown"), p(4, "unknown")])
        );
        assert_eq!(
            parse(42, Some("42"), Some("1"), None),
            Ok(vec![p(3, "unknown")])
        );
        assert_eq!(parse(42, Some("42"), Some("0"), Some("")), Ok(vec![]));
    }

    #[test]
    fn fds_for_someone_else_or_nobody() {
        assert_eq!(
            parse(42, Some("41"), Some("2"), Some("tun:udp")),
            Ok(vec![])
        );
        assert_eq!(parse(42, None, Some("2"), None), Ok(vec![]));
        assert_eq!(parse(42, Some("42"), None, None), Ok(vec![]));
        assert_eq!(parse(42, Some("x"), Some("2"), None), Ok(vec![]));
    }

    #[test]
    fn bad_count() {
        assert_eq!(
            parse(42, Some("42"), Some("-1"), None),
            Err(ListenFdsError::BadCount("-1".into()))
        );
        assert!(parse(42, Some("42"), Some("many"), None).is_err());
    }

    #[test]
    fn owns_open_fds_only() {
        use std::os::fd::{AsRawFd, IntoRawFd};
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let raw = f.into_raw_fd();
        let owned = own(raw).expect("open fd");
        assert_eq!(owned.as_raw_fd(), raw);
        let flags = nix::fcntl::fcntl(&owned, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        drop(owned);
        // A number nobody opened (far above anything this test holds).
        assert!(own(4000).is_none());
    }
}
