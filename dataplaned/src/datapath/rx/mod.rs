//! UDP → TUN: receive a batch of messages with `recvmmsg` (with `UDP_GRO`
//! one message holds many datagrams of one size from one peer), check every
//! datagram with [`forward::from_udp`], and write the accepted packets to the
//! TUN: TCP segments (and, where the TUN takes them, UDP datagrams) of one
//! flow coalesced into one super-packet ([`Coalescer`]), everything else one
//! write per packet.
//!
//! Payload is never copied in userspace: the TUN writes are `writev`s over
//! the receive buffers. Every buffer is allocated once.
//!
//! A coalesced write the kernel refuses (EINVAL: a kernel that cannot split
//! it, e.g. one judged by its release to take UDP super-packets that does
//! not) is written again packet by packet, from the received packets that
//! are still intact in the buffers; a refused UDP one also stops UDP
//! coalescing for good, and the status stops saying `tun-uso`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::datapath::counters::{DropReason, Tally};
use crate::datapath::mmsg::{self, CmsgBuf};
use crate::datapath::tun::Framing;
use crate::datapath::{ErrorLog, LoopIo};
use kolach_packet::coalesce::{Coalescer, Span, Write};
use kolach_packet::forward::{self, ForwardTable};
use kolach_packet::{coalesce, vnet};

/// Messages per `recvmmsg`: with GRO each may be up to 64 KiB.
const SLOTS_GRO: usize = 16;
const SLOTS_PLAIN: usize = 64;
const SLOT_LEN: usize = 65536;

pub struct Rx {
    framing: Framing,
    slots: Vec<Vec<u8>>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    names: Vec<libc::sockaddr_in>,
    ctrl: Vec<CmsgBuf>,
    coalescer: Coalescer,
    /// Scratch iovecs of one TUN write.
    wiov: Vec<libc::iovec>,
    /// Counts of the receive side, and of the TUN writes (kept apart so the
    /// write closure and the receive loop each own one).
    tally: Tally,
    written: Tally,
    recv_err: ErrorLog,
    write_err: ErrorLog,
    /// The kernel refused a coalesced UDP write since the last batch ended.
    uso_refused: bool,
}

/// Where accepted packets are written: the TUN (a fake in unit tests).
pub(crate) trait TunWrite {
    /// Writes the bytes the iovecs point at as one packet.
    ///
    /// # Safety
    ///
    /// Every iovec in `iov` points at `iov_len` readable bytes, live for the
    /// duration of the call.
    unsafe fn writev(&mut self, iov: &[libc::iovec]) -> io::Result<usize>;
}

impl TunWrite for BorrowedFd<'_> {
    unsafe fn writev(&mut self, iov: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: passed on: the caller keeps the iovecs' buffers live.
        unsafe { mmsg::writev(*self, iov) }
    }
}

impl Rx {
    pub fn new(framing: Framing, gro: bool, uso: bool) -> Rx {
        let n = if gro { SLOTS_GRO } else { SLOTS_PLAIN };
        let mut rx = Rx {
            framing,
            slots: (0..n).map(|_| vec![0u8; SLOT_LEN]).collect(),
            iovs: Vec::with_capacity(n),
            hdrs: vec![mmsg::zeroed_mmsghdr(); n],
            names: vec![mmsg::zeroed_sockaddr(); n],
            ctrl: vec![[0; 4]; n],
            coalescer: if uso {
                Coalescer::new()
            } else {
                Coalescer::tcp_only()
            },
            wiov: Vec::with_capacity(2 + coalesce::MAX_SEGMENTS),
            tally: Tally::default(),
            written: Tally::default(),
            recv_err: ErrorLog::new("UDP receive failed"),
            write_err: ErrorLog::new("TUN write failed"),
            uso_refused: false,
        };
        rx.point();
        rx
    }

    /// Receives and delivers up to `rounds` batches, until the socket is
    /// empty; publishes the counts. Returns how many messages arrived.
    pub fn run_batch(&mut self, io: &LoopIo, rounds: usize) -> usize {
        let mut got = 0;
        let sock = io.socket.as_fd();
        let table = io.table.load();
        for _ in 0..rounds {
            self.rearm();
            // SAFETY: `point` aimed every header at this struct's own
            // `names`, `ctrl` and `iovs` (one per slot), which are allocated
            // once and never move, and `rearm` reset their lengths to the
            // buffers'; nothing else touches them during the call.
            let r = unsafe { mmsg::recvmmsg(sock, &mut self.hdrs) };
            let n = match r {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => {
                    self.recv_err.note(&e);
                    break;
                }
            };
            self.deliver(&mut io.tun.as_fd(), &table, n);
            got += n;
            if n < self.hdrs.len() {
                break;
            }
        }
        io.counters.add(&mut self.tally);
        io.counters.add(&mut self.written);
        if std::mem::take(&mut self.uso_refused) && !io.counters.uso_refused() {
            io.counters.refuse_uso();
            tracing::warn!("the kernel refuses coalesced UDP writes to the TUN; writing one datagram per packet from now on");
        }
        got
    }

    /// Points every message header at its slot, name and control buffer,
    /// once: the buffers are allocated once and never move.
    fn point(&mut self) {
        self.iovs.clear();
        for s in self.slots.iter_mut() {
            self.iovs.push(libc::iovec {
                iov_base: s.as_mut_ptr().cast(),
                iov_len: s.len(),
            });
        }
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            *h = mmsg::zeroed_mmsghdr();
            h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.ctrl[i].as_mut_ptr().cast();
        }
        self.rearm();
    }

    /// Resets what a receive overwrote: the room for the sender's address
    /// and for control messages.
    fn rearm(&mut self) {
        for h in self.hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_controllen = std::mem::size_of::<CmsgBuf>();
        }
    }

    /// Checks and writes the datagrams of the first `n` messages.
    fn deliver(&mut self, tun: &mut impl TunWrite, table: &ForwardTable, n: usize) {
        let Rx {
            framing,
            slots,
            hdrs,
            names,
            coalescer,
            wiov,
            tally,
            written,
            write_err,
            uso_refused,
            ..
        } = self;
        let mut refused_udp = false;
        let framing = *framing;
        let vnet_len = match framing {
            Framing::Offload => vnet::LEN,
            Framing::Plain => 0,
        };
        let mut emit = |w: Write<'_>| {
            let v = w.vnet.encode();
            wiov.clear();
            if framing == Framing::Offload {
                wiov.push(mmsg::iovec(&v));
            }
            if !w.head.is_empty() {
                wiov.push(mmsg::iovec(w.head));
            }
            for p in w.parts {
                let b = &slots[p.buf as usize][p.start as usize..(p.start + p.len) as usize];
                wiov.push(mmsg::iovec(b));
            }
            // SAFETY: the iovecs point at `v`, the coalescer's header and
            // the receive slots, all live and unchanged for the call.
            match unsafe { tun.writev(wiov) } {
                Ok(len) => written.tun_tx(len - vnet_len),
                Err(e) if w.segments > 1 && e.raw_os_error() == Some(libc::EINVAL) => {
                    refused_udp |= w.vnet.gso_type == vnet::GSO_UDP_L4;
                    let plain = vnet::VnetHdr::default().encode();
                    for p in coalesce::originals(&w) {
                        wiov.clear();
                        if framing == Framing::Offload {
                            wiov.push(mmsg::iovec(&plain));
                        }
                        let b =
                            &slots[p.buf as usize][p.start as usize..(p.start + p.len) as usize];
                        wiov.push(mmsg::iovec(b));
                        // SAFETY: the iovecs point at `plain` and a receive
                        // slot, live and unchanged for the call.
                        match unsafe { tun.writev(wiov) } {
                            Ok(len) => written.tun_tx(len - vnet_len),
                            Err(e) => {
                                write_err.note(&e);
                                written.drop(DropReason::IoError, 1);
                            }
                        }
                    }
                }
                Err(e) => {
                    write_err.note(&e);
                    written.drop(DropReason::IoError, w.segments);
                }
            }
        };
        for j in 0..n {
            let h = &hdrs[j];
            let len = h.msg_len as usize;
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            // SAFETY: the header's control buffer is its `ctrl` entry, which
            // recvmmsg filled up to msg_controllen (0 when none came).
            let size = unsafe { mmsg::gro_size(&h.msg_hdr) }.unwrap_or(len).max(1);
            let count = len.div_ceil(size).max(1);
            let Some(sender) = mmsg::sender(&names[j], h.msg_hdr.msg_namelen) else {
                tally.drop(DropReason::UnknownSender, count);
                continue;
            };
            if truncated {
                // Bigger than any IPv4 packet: not ours.
                tally.drop(DropReason::Malformed, count);
                continue;
            }
            // An empty datagram is one (malformed) packet too: count >= 1.
            for c in 0..count {
                let at = c * size;
                let end = (at + size).min(len);
                let pkt = &slots[j][at..end];
                tally.udp_rx(pkt.len());
                match forward::from_udp(table, sender, pkt) {
                    Err(reason) => tally.drop(reason, 1),
                    Ok(()) => {
                        let span = Span {
                            buf: j as u32,
                            start: at as u32,
                            len: pkt.len() as u32,
                        };
                        match framing {
                            Framing::Offload => coalescer.push(pkt, span, &mut emit),
                            Framing::Plain => emit(Write {
                                vnet: vnet::VnetHdr::default(),
                                head: &[],
                                parts: &[span],
                                segments: 1,
                            }),
                        }
                    }
                }
            }
        }
        coalescer.flush(&mut emit);
        if refused_udp {
            *coalescer = Coalescer::tcp_only();
            *uso_refused = true;
        }
    }
}

#[cfg(test)]
mod tests;
