//! sd_notify(3) without a crate, for both daemons: one datagram to
//! `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket), optionally
//! carrying fds as SCM_RIGHTS (systemd's fd store, `FDSTORE=1`).
//!
//! Sending never waits: a listener that does not read costs a notification
//! (the caller logs the error), never the caller's progress.

use std::ffi::OsStr;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSliceMut;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixDatagram;

    use nix::sys::socket::{recvmsg, ControlMessageOwned};

    /// One datagram from the fake systemd: its text and the fds it carried
    /// (open in this process until the test closes them).
    fn receive(server: &UnixDatagram) -> (String, Vec<RawFd>) {
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
                fds.extend(v);
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
        let got = std::fs::metadata(format!("/proc/self/fd/{}", fds[0])).unwrap();
        assert_eq!(got.ino(), file.metadata().unwrap().ino());
        nix::unistd::close(fds[0]).unwrap();
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

    /// What controld does once subnet.env is written: READY=1 to the socket
    /// systemd names, nothing at all without one.
    #[test]
    fn from_env_follows_notify_socket() {
        let dir = tmp("env");
        let path = dir.join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        let n = Notifier::from_env().unwrap();
        assert!(n.send("READY=1", &[]).unwrap());
        assert_eq!(receive(&server).0, "READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let n = Notifier::from_env().unwrap();
        assert!(!n.enabled());
        assert!(!n.send("READY=1", &[]).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
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
