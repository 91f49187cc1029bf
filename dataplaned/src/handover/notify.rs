//! Talking to systemd over `$NOTIFY_SOCKET` (sd_notify(3) without a crate):
//! READY / RELOADING / STATUS, and the fd store (`FDSTORE=1` with the fds
//! attached as SCM_RIGHTS, `FDSTOREREMOVE=1`), which keeps the TUN and UDP
//! fds open across a crash or restart of the service.
//!
//! The socket is read from the environment once, at start ([`init_from_env`]);
//! without it (not run by systemd) every call is a no-op.

use std::ffi::OsStr;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

use nix::sys::socket::{
    sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};

/// Where notifications go.
#[derive(Debug, Clone)]
pub struct Notifier {
    addr: Option<UnixAddr>,
}

impl Notifier {
    /// A notifier for the socket at `path` (`@name` for an abstract socket).
    pub fn new(path: &OsStr) -> io::Result<Notifier> {
        let bytes = path.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => UnixAddr::new_abstract(name),
            None => UnixAddr::new(path),
        }
        .map_err(io::Error::from)?;
        Ok(Notifier { addr: Some(addr) })
    }

    /// Not run by systemd: notifications go nowhere.
    pub fn none() -> Notifier {
        Notifier { addr: None }
    }

    pub fn from_env() -> io::Result<Notifier> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(p) if !p.is_empty() => Notifier::new(&p),
            _ => Ok(Notifier::none()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.addr.is_some()
    }

    /// Sends `state` (newline-separated assignments) with `fds` attached.
    /// Ok(false) when there is nowhere to send.
    pub fn send(&self, state: &str, fds: &[RawFd]) -> io::Result<bool> {
        let Some(addr) = &self.addr else {
            return Ok(false);
        };
        let sock = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        let iov = [IoSlice::new(state.as_bytes())];
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        // Never wait for systemd: a full queue costs a notification (logged),
        // not the data path.
        sendmsg(
            sock.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            Some(addr),
        )?;
        Ok(true)
    }
}

static NOTIFIER: OnceLock<Notifier> = OnceLock::new();

/// Reads `$NOTIFY_SOCKET` for the rest of the process's life. It stays in the
/// environment: a hot upgrade's new image needs it too.
pub fn init_from_env() {
    let n = Notifier::from_env().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "ignoring an unusable NOTIFY_SOCKET");
        Notifier::none()
    });
    let _ = NOTIFIER.set(n);
}

fn global() -> Option<&'static Notifier> {
    NOTIFIER.get().filter(|n| n.enabled())
}

/// Whether systemd is listening (the service runs under it).
pub fn enabled() -> bool {
    global().is_some()
}

fn send(state: &str, fds: &[RawFd]) {
    if let Some(n) = global() {
        match n.send(state, fds) {
            Ok(_) => {
                tracing::debug!(state = %state.replace('\n', " "), fds = fds.len(), "sd_notify")
            }
            Err(e) => {
                tracing::warn!(state = %state.replace('\n', " "), error = %e, "sd_notify failed")
            }
        }
    }
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    send(
        &format!("READY=1\nSTATUS={status}\nMAINPID={}", std::process::id()),
        &[],
    );
}

/// `RELOADING=1`: a hot upgrade has begun; [`ready`] ends it (new or old image).
pub fn reloading(status: &str) {
    let now = super::monotonic_us();
    send(
        &format!("RELOADING=1\nMONOTONIC_USEC={now}\nSTATUS={status}"),
        &[],
    );
}

pub fn status(status: &str) {
    send(&format!("STATUS={status}"), &[]);
}

/// Stores `fds` under `name`, in order (the order comes back in
/// `LISTEN_FDS`). New fds (`replace`) first remove what was stored under the
/// name; ones handed down are stored as they are (systemd ignores an fd it
/// already holds), so the store is never without them meanwhile.
pub fn store_fds(name: &str, fds: &[impl AsFd], replace: bool) {
    if global().is_some() {
        if replace {
            remove_fds(name);
        }
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_fd().as_raw_fd()).collect();
        send(&format!("FDSTORE=1\nFDNAME={name}"), &raw);
    }
}

/// Drops the fds stored under `name` (the device or socket is gone for good).
pub fn remove_fds(name: &str) {
    send(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), &[]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSliceMut;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixDatagram;

    use nix::sys::socket::{recvmsg, ControlMessageOwned};

    /// One datagram from the fake systemd: its text and the fds it carried.
    fn receive(server: &UnixDatagram) -> (String, Vec<OwnedFd>) {
        let mut buf = [0u8; 512];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let msg = recvmsg::<()>(
            server.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .unwrap();
        let mut fds = Vec::new();
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(v) = c {
                // SAFETY: the kernel just installed these fds for us.
                fds.extend(v.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        let n = msg.bytes;
        (String::from_utf8_lossy(&buf[..n]).into_owned(), fds)
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kdp-notify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sends_state_and_fds_to_a_fake_systemd() {
        let dir = tmp("fds");
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str()).unwrap();
        assert!(n.send("READY=1\nSTATUS=serving", &[]).unwrap());
        let (text, fds) = receive(&server);
        assert_eq!((text.as_str(), fds.len()), ("READY=1\nSTATUS=serving", 0));

        // The fd that arrives is the same open file as the one sent.
        let file = std::fs::File::create(dir.join("payload")).unwrap();
        assert!(n
            .send("FDSTORE=1\nFDNAME=tun", &[file.as_fd().as_raw_fd()])
            .unwrap());
        let (text, fds) = receive(&server);
        assert_eq!(text, "FDSTORE=1\nFDNAME=tun");
        assert_eq!(fds.len(), 1);
        let got = std::fs::File::from(fds.into_iter().next().unwrap());
        assert_eq!(
            got.metadata().unwrap().ino(),
            file.metadata().unwrap().ino()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn abstract_socket_and_no_socket() {
        let name = format!("kolach-notify-test-{}", std::process::id());
        let addr = UnixAddr::new_abstract(name.as_bytes()).unwrap();
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        nix::sys::socket::bind(fd.as_raw_fd(), &addr).unwrap();
        let server = UnixDatagram::from(fd);
        let n = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        assert!(n.send("RELOADING=1", &[]).unwrap());
        assert_eq!(receive(&server).0, "RELOADING=1");

        assert!(!Notifier::none().send("READY=1", &[]).unwrap());
        assert!(!Notifier::none().enabled());
    }

    #[test]
    fn a_listener_that_does_not_read_never_blocks_us() {
        let dir = tmp("full");
        let path = dir.join("notify.sock");
        let _server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str()).unwrap();
        let mut full = None;
        for i in 0..10_000 {
            if let Err(e) = n.send("STATUS=x", &[]) {
                full = Some((i, e.kind()));
                break;
            }
        }
        let (i, kind) = full.expect("the queue fills up");
        assert!(i > 0);
        assert_eq!(kind, io::ErrorKind::WouldBlock);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
