//! Which of the kernel's offloads the udp backend uses, found out at start.
//!
//! - TUN TSO (`IFF_VNET_HDR` + `TUNSETOFFLOAD`): one read returns a TCP
//!   super-packet of up to 64 KiB, one write takes a coalesced one.
//! - UDP GSO (`UDP_SEGMENT`, Linux 4.18): one send carries many datagrams of
//!   one size to one peer.
//! - UDP GRO (`UDP_GRO`, Linux 5.0): one receive returns many datagrams of
//!   one size from one peer.
//! - TUN USO (Linux 6.2): received UDP datagrams of one flow are written to
//!   the TUN as one super-packet, like TCP segments with TSO.
//!
//! Each is used where the kernel has it and `--offload auto`; what is missing
//! falls back to one packet per read/write and `sendmmsg`/`recvmmsg` batches.
//! The status shows what runs ([`Features`]'s `Display`).

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use crate::datapath::busy_poll::Window;

/// `--offload`: whether to use the kernel's offloads at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Offload {
    /// Every offload the kernel supports.
    #[default]
    Auto,
    /// None: plain TUN reads and writes, sendmmsg/recvmmsg batches.
    Off,
}

/// The offloads in use, and the loop's busy-poll window (zero: off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    pub tun_tso: bool,
    pub tun_uso: bool,
    pub udp_gso: bool,
    pub udp_gro: bool,
    pub busy_poll: Duration,
    /// TUN queues, each with its socket and loop thread (0 in a default
    /// value means 1).
    pub queues: usize,
    /// Whether packets go to the queue of their CPU (else by flow).
    pub by_cpu: bool,
}

impl Features {
    pub fn any(&self) -> bool {
        self.tun_tso || self.tun_uso || self.udp_gso || self.udp_gro
    }

    /// What still runs after the kernel refused GSO sends or coalesced UDP
    /// TUN writes at run time (the loop stopped using them).
    pub fn without_refused(self, gso_refused: bool, uso_refused: bool) -> Features {
        Features {
            udp_gso: self.udp_gso && !gso_refused,
            tun_uso: self.tun_uso && !uso_refused,
            ..self
        }
    }
}

impl fmt::Display for Features {
    /// `offload (tun-tso, tun-uso, udp-gso, udp-gro)` with what is on, or
    /// `batch (sendmmsg, recvmmsg)` when nothing is; then `, 2 queues by
    /// cpu` (or `by flow`) with several queues, and `, busy-poll 20ms` with
    /// `--busy-poll 20ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_io(f)?;
        if self.queues > 1 {
            let by = if self.by_cpu { "cpu" } else { "flow" };
            write!(f, ", {} queues by {by}", self.queues)?;
        }
        if !self.busy_poll.is_zero() {
            write!(f, ", busy-poll {}", Window(self.busy_poll))?;
        }
        Ok(())
    }
}

impl Features {
    fn fmt_io(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.any() {
            return f.write_str("batch (sendmmsg, recvmmsg)");
        }
        let on: Vec<&str> = [
            (self.tun_tso, "tun-tso"),
            (self.tun_uso, "tun-uso"),
            (self.udp_gso, "udp-gso"),
            (self.udp_gro, "udp-gro"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        write!(f, "offload ({})", on.join(", "))
    }
}

/// Whether the socket can send with `UDP_SEGMENT`: the option exists.
pub fn udp_gso_supported(sock: BorrowedFd<'_>) -> bool {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a live c_int with its size.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0
}

/// Turns `UDP_GRO` on or off; false when the kernel does not have it (it
/// is then off). A socket handed down may have it either way, so this is
/// always set explicitly.
pub fn set_udp_gro(sock: BorrowedFd<'_>, on: bool) -> bool {
    let v: libc::c_int = on.into();
    // SAFETY: setsockopt from a live c_int with its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0 && on
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    const ALL: Features = Features {
        tun_tso: true,
        tun_uso: true,
        udp_gso: true,
        udp_gro: true,
        busy_poll: Duration::ZERO,
        queues: 1,
        by_cpu: false,
    };

    #[test]
    fn display_names_what_runs() {
        assert_eq!(
            Features::default().to_string(),
            "batch (sendmmsg, recvmmsg)"
        );
        let all = ALL;
        assert_eq!(
            all.to_string(),
            "offload (tun-tso, tun-uso, udp-gso, udp-gro)"
        );
        let busy = Features {
            busy_poll: Duration::from_millis(20),
            ..all
        };
        assert_eq!(
            busy.to_string(),
            "offload (tun-tso, tun-uso, udp-gso, udp-gro), busy-poll 20ms"
        );
        let plain_busy = Features {
            busy_poll: Duration::from_micros(500),
            ..Default::default()
        };
        assert_eq!(
            plain_busy.to_string(),
            "batch (sendmmsg, recvmmsg), busy-poll 500us"
        );
        let two = Features {
            queues: 2,
            by_cpu: true,
            ..busy
        };
        assert_eq!(
            two.to_string(),
            "offload (tun-tso, tun-uso, udp-gso, udp-gro), 2 queues by cpu, busy-poll 20ms"
        );
        let by_flow = Features {
            queues: 4,
            ..Default::default()
        };
        assert_eq!(
            by_flow.to_string(),
            "batch (sendmmsg, recvmmsg), 4 queues by flow"
        );
        let some = Features {
            udp_gro: true,
            ..Default::default()
        };
        assert_eq!(some.to_string(), "offload (udp-gro)");
    }

    #[test]
    fn refusals_at_run_time_leave_the_mode() {
        let all = ALL;
        assert_eq!(all.without_refused(false, false), all);
        assert_eq!(
            all.without_refused(true, false).to_string(),
            "offload (tun-tso, tun-uso, udp-gro)"
        );
        assert_eq!(
            all.without_refused(false, true).to_string(),
            "offload (tun-tso, udp-gso, udp-gro)"
        );
        let none = Features::default();
        assert_eq!(none.without_refused(true, true), none);
    }

    #[test]
    fn this_kernel_has_udp_gso_and_gro() {
        // The machines kolach runs on (Linux >= 5.0) have both.
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(udp_gso_supported(s.as_fd()));
        assert!(set_udp_gro(s.as_fd(), true));
        assert!(!set_udp_gro(s.as_fd(), false));
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!udp_gso_supported(tcp.as_fd()), "not a UDP socket");
    }
}
