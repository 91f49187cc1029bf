//! The batch socket calls of the packet loop, and the only unsafe code on
//! its path: `sendmmsg`/`recvmmsg` over caller-built `mmsghdr` arrays, the
//! `UDP_SEGMENT` and `UDP_GRO` control messages, `writev` to the TUN.
//!
//! Callers keep every array preallocated and fill it per batch; nothing
//! here allocates. A `mmsghdr`, `msghdr` or `iovec` holds raw pointers that
//! the kernel reads or writes through, so every call that hands one over is
//! an `unsafe fn` whose `# Safety` says what the caller must keep alive; the
//! callers (`tx.rs`, `rx/mod.rs`) point them only at their own buffers.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Room for one control message carrying a u16 (`UDP_SEGMENT`) or an int
/// (`UDP_GRO`): `CMSG_SPACE(4)` is 24 bytes on 64-bit Linux; 8-byte aligned.
pub type CmsgBuf = [u64; 4];

pub fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain data; all-zero is a valid (empty) value.
    unsafe { std::mem::zeroed() }
}

pub fn zeroed_sockaddr() -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

pub fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    let mut s = zeroed_sockaddr();
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
    s
}

/// The IPv4 address of a filled-in `sockaddr_in`, if it is one.
pub fn sender(s: &libc::sockaddr_in, namelen: libc::socklen_t) -> Option<Ipv4Addr> {
    let full = namelen as usize >= std::mem::size_of::<libc::sockaddr_in>();
    (full && s.sin_family == libc::AF_INET as libc::sa_family_t)
        .then(|| Ipv4Addr::from(s.sin_addr.s_addr.to_ne_bytes()))
}

pub fn iovec(data: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    }
}

/// Writes a `UDP_SEGMENT` control message for `size` into `buf`; returns
/// the length to put in `msg_controllen`.
pub fn gso_cmsg(buf: &mut CmsgBuf, size: u16) -> usize {
    *buf = [0; 4];
    // SAFETY: CMSG_* computed over a buffer of CMSG_SPACE(2) <= 32 bytes;
    // the header and data are written inside it.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
        debug_assert!(space <= std::mem::size_of::<CmsgBuf>());
        let c = buf.as_mut_ptr().cast::<libc::cmsghdr>();
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size);
        space
    }
}

/// The datagram size of a `UDP_GRO` receive, from the control message the
/// kernel wrote into `msg`'s control buffer; None when there is none (the
/// buffer holds a single datagram).
///
/// # Safety
///
/// `msg.msg_control` points at `msg.msg_controllen` readable bytes (or
/// `msg_controllen` is 0) that hold control messages as `recvmsg` leaves
/// them (each `cmsg_len` within the buffer).
pub unsafe fn gro_size(msg: &libc::msghdr) -> Option<usize> {
    // SAFETY: walks the control messages the kernel wrote, within
    // msg_controllen, with the CMSG_* macros (the caller's contract).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return usize::try_from(v).ok().filter(|v| *v > 0);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// `sendmmsg` of `msgs`; how many went.
///
/// # Safety
///
/// Every header's `msg_name`, `msg_iov` (with `msg_iovlen` iovecs, each
/// pointing at `iov_len` readable bytes) and `msg_control` (with
/// `msg_controllen` bytes) point at memory that is live and not written to
/// for the duration of the call.
pub unsafe fn sendmmsg(fd: BorrowedFd<'_>, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    let n = msgs.len().min(libc::UIO_MAXIOV as usize) as libc::c_uint;
    // SAFETY: msgs is a live array of n headers whose pointers the caller
    // keeps valid for the call.
    let r = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), n, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Non-blocking `recvmmsg` into `msgs`; how many arrived.
///
/// # Safety
///
/// Every header's `msg_name` (`msg_namelen` bytes), `msg_iov` (with
/// `msg_iovlen` iovecs, each pointing at `iov_len` writable bytes) and
/// `msg_control` (`msg_controllen` bytes) point at memory that is live,
/// writable and not otherwise accessed for the duration of the call: the
/// kernel writes into all of it.
pub unsafe fn recvmmsg(fd: BorrowedFd<'_>, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    // SAFETY: msgs is a live array whose iovecs, names and control buffers
    // the caller keeps valid for the call.
    let r = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// One `sendmsg` of `iov` to `dst`, no control message.
///
/// # Safety
///
/// Every iovec in `iov` points at `iov_len` readable bytes, live for the
/// duration of the call.
pub unsafe fn sendmsg(
    fd: BorrowedFd<'_>,
    dst: &libc::sockaddr_in,
    iov: &[libc::iovec],
) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr pointing at `dst` and at the iovecs, which
    // (the caller's contract) point at live data for the call.
    let r = unsafe {
        let mut m: libc::msghdr = std::mem::zeroed();
        m.msg_name = (dst as *const libc::sockaddr_in).cast_mut().cast();
        m.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        m.msg_iov = iov.as_ptr().cast_mut();
        m.msg_iovlen = iov.len();
        libc::sendmsg(fd.as_raw_fd(), &m, 0)
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// One `writev` (one packet to the TUN).
///
/// # Safety
///
/// Every iovec in `iov` points at `iov_len` readable bytes, live for the
/// duration of the call.
pub unsafe fn writev(fd: BorrowedFd<'_>, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: iov points at live buffers for the call (the caller's contract).
    let r = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    fn recv_one(s: &UdpSocket, buf: &mut [u8]) -> (usize, Option<usize>, Option<Ipv4Addr>) {
        let mut name = zeroed_sockaddr();
        let mut ctrl: CmsgBuf = [0; 4];
        let mut iov = [libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }];
        let mut h = [zeroed_mmsghdr()];
        h[0].msg_hdr.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
        h[0].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        h[0].msg_hdr.msg_iov = iov.as_mut_ptr();
        h[0].msg_hdr.msg_iovlen = 1;
        h[0].msg_hdr.msg_control = ctrl.as_mut_ptr().cast();
        h[0].msg_hdr.msg_controllen = std::mem::size_of::<CmsgBuf>();
        for _ in 0..100 {
            // SAFETY: the header points at `name`, `iov` (into `buf`) and
            // `ctrl`, all live and untouched during the call.
            match unsafe { recvmmsg(s.as_fd(), &mut h) } {
                Ok(1) => {
                    return (
                        h[0].msg_len as usize,
                        // SAFETY: the kernel filled `ctrl` up to msg_controllen.
                        unsafe { gro_size(&h[0].msg_hdr) },
                        sender(&name, h[0].msg_hdr.msg_namelen),
                    );
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        panic!("nothing received");
    }

    #[test]
    fn gso_send_arrives_as_datagrams_of_the_segment_size() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = match rx.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let payload: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let mut ctrl: CmsgBuf = [0; 4];
        let clen = gso_cmsg(&mut ctrl, 1000);
        let name = sockaddr(to);
        let mut iov = [iovec(&payload[..700]), iovec(&payload[700..])];
        let mut h = [zeroed_mmsghdr()];
        h[0].msg_hdr.msg_name = (&name as *const libc::sockaddr_in).cast_mut().cast();
        h[0].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        h[0].msg_hdr.msg_iov = iov.as_mut_ptr();
        h[0].msg_hdr.msg_iovlen = 2;
        h[0].msg_hdr.msg_control = ctrl.as_mut_ptr().cast();
        h[0].msg_hdr.msg_controllen = clen;
        // SAFETY: the header points at `name`, `iov` (into `payload`) and
        // `ctrl`, all live for the call.
        assert_eq!(unsafe { sendmmsg(tx.as_fd(), &mut h) }.unwrap(), 1);
        // Without UDP_GRO the receiver sees three datagrams: 1000, 1000, 500.
        let mut buf = vec![0u8; 65536];
        let mut sizes = Vec::new();
        for _ in 0..3 {
            let (n, gro, from) = recv_one(&rx, &mut buf);
            assert_eq!(gro, None);
            assert_eq!(from, Some(Ipv4Addr::LOCALHOST));
            let at = sizes.iter().sum::<usize>();
            assert_eq!(&buf[..n], &payload[at..at + n]);
            sizes.push(n);
        }
        assert_eq!(sizes, [1000, 1000, 500]);
    }

    #[test]
    fn gro_receive_reports_the_datagram_size() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(crate::datapath::offload::set_udp_gro(rx.as_fd(), true));
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = match rx.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let payload = vec![7u8; 3000];
        let mut ctrl: CmsgBuf = [0; 4];
        let clen = gso_cmsg(&mut ctrl, 1200);
        let name = sockaddr(to);
        let mut iov = [iovec(&payload)];
        let mut h = [zeroed_mmsghdr()];
        h[0].msg_hdr.msg_name = (&name as *const libc::sockaddr_in).cast_mut().cast();
        h[0].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        h[0].msg_hdr.msg_iov = iov.as_mut_ptr();
        h[0].msg_hdr.msg_iovlen = 1;
        h[0].msg_hdr.msg_control = ctrl.as_mut_ptr().cast();
        h[0].msg_hdr.msg_controllen = clen;
        // SAFETY: the header points at `name`, `iov` (into `payload`) and
        // `ctrl`, all live for the call.
        assert_eq!(unsafe { sendmmsg(tx.as_fd(), &mut h) }.unwrap(), 1);
        let mut buf = vec![0u8; 65536];
        // A GSO send over loopback reaches a GRO socket whole.
        let (n, gro, _) = recv_one(&rx, &mut buf);
        assert_eq!((n, gro), (3000, Some(1200)));
    }
}
