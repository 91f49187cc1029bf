//! What a starting image takes over: after a hot upgrade, the fds and state
//! the previous image handed down ([`handoff`](crate::handover::handoff)); after a
//! restart under systemd, the TUN and UDP fds from the fd store
//! (`LISTEN_FDS`). Every fd is checked before it is used (a TUN fd must be
//! attached to our device, the UDP fd an IPv4 datagram socket, the listener
//! the socket at our path); one that is not is closed and the daemon opens
//! its own.
//!
//! Runs before the async runtime starts: it edits the environment.

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{getsockopt, sockopt, SockType};

use super::{FD_TUN, FD_UDP};
use crate::datapath::tun;
use crate::handover::handoff::{Handoff, HandoffError};
use crate::handover::listen_fds::{self, ListenFdsError};

#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    #[error("{var} is set but unusable: {source}", var = crate::handover::handoff::ENV)]
    Handoff {
        #[from]
        source: HandoffError,
    },
    #[error("the handed-over fd {fd} ({what}) is not open")]
    Closed { fd: i32, what: &'static str },
    #[error("the handed-over gRPC listener is unusable: {0}")]
    Listener(String),
    #[error(transparent)]
    ListenFds {
        #[from]
        source: ListenFdsError,
    },
}

/// What the process carries from one image to the next.
#[derive(Debug, Clone)]
pub struct Carried {
    /// Hot upgrades this process has been through (this image included).
    pub upgrades: u32,
    /// When the first image started.
    pub started: SystemTime,
    /// When this image took over, if it came from a hot upgrade.
    pub upgraded_at: Option<SystemTime>,
    /// CLOCK_MONOTONIC µs when the previous image stopped its packet loop.
    pub paused_at_us: Option<u64>,
    /// Packet counters to continue from.
    pub counters: Vec<u64>,
}

impl Default for Carried {
    fn default() -> Self {
        Carried {
            upgrades: 0,
            started: SystemTime::now(),
            upgraded_at: None,
            paused_at_us: None,
            counters: Vec::new(),
        }
    }
}

/// The udp backend's fds, if handed down: TUN queues and UDP sockets, each
/// in queue order.
#[derive(Debug, Default)]
pub struct Inherited {
    pub tun: Vec<File>,
    pub udp: Vec<UdpSocket>,
}

/// Where the fds came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Fresh,
    Systemd,
    Upgrade,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Fresh => "fresh start",
            Source::Systemd => "systemd fd store",
            Source::Upgrade => "hot upgrade",
        }
    }
}

#[derive(Debug)]
pub struct Start {
    pub source: Source,
    pub carried: Carried,
    pub fds: Inherited,
    /// The listening gRPC socket (hot upgrade only).
    pub listener: Option<UnixListener>,
}

impl Default for Start {
    fn default() -> Self {
        Start {
            source: Source::Fresh,
            carried: Carried::default(),
            fds: Inherited::default(),
            listener: None,
        }
    }
}

/// Collects what this image inherits (see the module doc). `socket` is where
/// the gRPC listener must be bound.
pub fn collect(tun_name: &str, socket: &Path) -> Result<Start, InheritError> {
    let mut start = Start::default();
    if let Some(text) = std::env::var_os(crate::handover::handoff::ENV) {
        std::env::remove_var(crate::handover::handoff::ENV);
        let h = Handoff::parse(&text.to_string_lossy())?;
        from_handoff(&mut start, &h, tun_name, socket)?;
    }
    let passed = listen_fds::take_from_env()?;
    if !passed.is_empty() && start.source == Source::Fresh {
        start.source = Source::Systemd;
    }
    // The store keeps fds in the order they were stored: queue order.
    // What a handover brought comes first.
    let (had_tun, had_udp) = (!start.fds.tun.is_empty(), !start.fds.udp.is_empty());
    for (name, fd) in passed {
        match name.as_str() {
            FD_TUN if !had_tun => start.fds.tun.extend(adopt_tun(fd, tun_name)),
            FD_UDP if !had_udp => start.fds.udp.extend(adopt_udp(fd)),
            _ => tracing::info!(name = %name, "closing an fd from systemd that is not needed"),
        }
    }
    Ok(start)
}

fn owned(fd: i32, what: &'static str) -> Result<OwnedFd, InheritError> {
    listen_fds::own(fd).ok_or(InheritError::Closed { fd, what })
}

fn from_handoff(
    start: &mut Start,
    h: &Handoff,
    tun_name: &str,
    socket: &Path,
) -> Result<(), InheritError> {
    start.source = Source::Upgrade;
    let listener = owned(h.listener, "gRPC listener")?;
    start.listener = Some(adopt_listener(listener, socket).map_err(InheritError::Listener)?);
    for fd in &h.tun {
        start
            .fds
            .tun
            .extend(adopt_tun(owned(*fd, "TUN")?, tun_name));
    }
    for fd in &h.udp {
        start.fds.udp.extend(adopt_udp(owned(*fd, "UDP socket")?));
    }
    start.carried = Carried {
        upgrades: h.upgrades.saturating_add(1),
        started: UNIX_EPOCH + Duration::from_millis(u64::try_from(h.started_unix_ms).unwrap_or(0)),
        upgraded_at: Some(SystemTime::now()),
        paused_at_us: Some(h.paused_at_us),
        counters: h.counters.clone(),
    };
    Ok(())
}

fn adopt_tun(fd: OwnedFd, name: &str) -> Option<File> {
    match tun::adopt(File::from(fd), name) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(error = %e, "not using the inherited TUN fd");
            None
        }
    }
}

/// An IPv4 datagram socket with a local address.
pub fn check_udp(s: &UdpSocket) -> Result<SocketAddr, String> {
    match getsockopt(s, sockopt::SockType) {
        Ok(SockType::Datagram) => {}
        Ok(t) => return Err(format!("socket type {t:?}, not a datagram socket")),
        Err(e) => return Err(format!("not a socket: {e}")),
    }
    match s.local_addr() {
        Ok(a @ SocketAddr::V4(_)) => Ok(a),
        Ok(a) => Err(format!("bound to {a}, not an IPv4 address")),
        Err(e) => Err(format!("no local address: {e}")),
    }
}

fn adopt_udp(fd: OwnedFd) -> Option<UdpSocket> {
    let s = UdpSocket::from(fd);
    match check_udp(&s) {
        Ok(addr) => {
            tracing::debug!(address = %addr, "inherited UDP socket");
            Some(s)
        }
        Err(e) => {
            tracing::warn!(error = %e, "not using the inherited UDP fd");
            None
        }
    }
}

/// A listening Unix stream socket bound to `path`, made non-blocking for tokio.
pub fn adopt_listener(fd: OwnedFd, path: &Path) -> Result<UnixListener, String> {
    match getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(t) => return Err(format!("socket type {t:?}, not a stream socket")),
        Err(e) => return Err(format!("not a socket: {e}")),
    }
    if !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
        return Err("the socket is not listening".into());
    }
    let l = UnixListener::from(fd);
    let addr = l
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?;
    if addr.as_pathname() != Some(path) {
        return Err(format!(
            "bound to {:?}, not {}",
            addr.as_pathname(),
            path.display()
        ));
    }
    l.set_nonblocking(true)
        .map_err(|e| format!("cannot make it non-blocking: {e}"))?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_sockets_are_checked() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(check_udp(&s).is_ok());
        let v6 = UdpSocket::bind("[::1]:0");
        if let Ok(v6) = v6 {
            assert!(check_udp(&v6).unwrap_err().contains("not an IPv4"));
        }
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let as_udp = UdpSocket::from(OwnedFd::from(tcp));
        assert!(check_udp(&as_udp).unwrap_err().contains("not a datagram"));
    }

    #[test]
    fn listeners_are_checked() {
        let dir = std::env::temp_dir().join(format!("kdp-inherit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dataplaned.sock");
        let l = UnixListener::bind(&path).unwrap();
        let adopted = adopt_listener(OwnedFd::from(l), &path).unwrap();
        let other = adopt_listener(OwnedFd::from(adopted), &dir.join("other.sock"));
        assert!(other.unwrap_err().contains("not"));
        let dgram = std::os::unix::net::UnixDatagram::bind(dir.join("d.sock")).unwrap();
        let e = adopt_listener(OwnedFd::from(dgram), &path).unwrap_err();
        assert!(e.contains("not a stream socket"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn handoff_state_is_carried() {
        let dir = std::env::temp_dir().join(format!("kdp-inherit-h-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dataplaned.sock");
        let l = UnixListener::bind(&path).unwrap();
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        use std::os::fd::IntoRawFd;
        let h = Handoff {
            listener: l.into_raw_fd(),
            format: 2,
            udp: vec![u.into_raw_fd()],
            tun: vec![],
            upgrades: 4,
            started_unix_ms: 1_700_000_000_500,
            paused_at_us: 7,
            counters: vec![9, 8],
        };
        let mut start = Start::default();
        from_handoff(&mut start, &h, "kolach0", &path).unwrap();
        assert_eq!(start.source, Source::Upgrade);
        assert_eq!(start.carried.upgrades, 5);
        assert_eq!(
            start.carried.started,
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_500)
        );
        assert_eq!(start.carried.counters, vec![9, 8]);
        assert!(start.listener.is_some() && start.fds.udp.len() == 1);
        assert!(start.fds.tun.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
