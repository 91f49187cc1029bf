//! The udp backend's sockets: one UDP socket per queue, all of one
//! `SO_REUSEPORT` group on PublicIP:Port, with buffers that absorb a burst.

use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

/// Socket buffer size: a burst from the TUN side of a peer must not overflow
/// the default ~200 KiB receive queue while our loop thread is busy.
const SOCKET_BUFFER: usize = 8 << 20;

/// Raises the socket's buffers; with CAP_NET_ADMIN the FORCE variants go past
/// net.core.{r,w}mem_max. Failure only costs throughput.
pub fn size_buffers(s: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    let r = setsockopt(s, sockopt::RcvBufForce, &SOCKET_BUFFER)
        .or_else(|_| setsockopt(s, sockopt::RcvBuf, &SOCKET_BUFFER));
    let w = setsockopt(s, sockopt::SndBufForce, &SOCKET_BUFFER)
        .or_else(|_| setsockopt(s, sockopt::SndBuf, &SOCKET_BUFFER));
    if let Err(e) = r.and(w) {
        tracing::debug!(error = %e, "cannot raise UDP socket buffers");
    }
}

/// A UDP socket with `SO_REUSEPORT` bound to `addr`: one of a queue group.
pub fn bind_reuseport(addr: SocketAddrV4) -> io::Result<UdpSocket> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(addr))?;
    Ok(UdpSocket::from(fd))
}
