//! TUN → UDP: read packets (TCP super-packets where the TUN offloads),
//! decide with [`forward::from_tun`], cut super-packets into segments and
//! send everything of a batch in one `sendmmsg`, consecutive datagrams of one
//! size to one peer folded into one message with `UDP_SEGMENT`.
//!
//! A segment is its own headers (written into the header arena) plus its
//! payload, which stays where the read put it: iovecs point at both, so no
//! payload is copied in userspace. Every buffer is allocated once.

use std::net::SocketAddrV4;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;

use crate::datapath::counters::{Counters, DropReason, Tally};
use crate::datapath::mmsg::{self, CmsgBuf};
use crate::datapath::tun::Framing;
use crate::datapath::{ErrorLog, LoopIo};
use kolach_packet::forward::{self, ForwardTable, TunVerdict};
use kolach_packet::gso_plan::{add_datagram, Msg};
use kolach_packet::segment::{self, Tso};
use kolach_packet::{icmp, vnet};

/// Reads per batch with offloads (each up to 64 KiB) and without (at most
/// 64: one bit each in `Tx::in_use`).
const SLOTS_OFFLOAD: usize = 16;
const SLOTS_PLAIN: usize = 64;
const _: () = assert!(SLOTS_OFFLOAD <= 64 && SLOTS_PLAIN <= 64);
const SLOT_LEN: usize = vnet::LEN + 65535;
/// Segments (datagrams) and messages per `sendmmsg`.
const MAX_SEGS: usize = 1024;
const MAX_MSGS: usize = 1024;
/// One datagram: optional headers in the arena, then bytes of a slot.
#[derive(Debug, Clone, Copy)]
struct Seg {
    hdr_at: u32,
    hdr_len: u16,
    slot: u16,
    start: u32,
    len: u32,
}

impl Seg {
    fn datagram_len(&self) -> usize {
        usize::from(self.hdr_len) + self.len as usize
    }
}

pub struct Tx {
    framing: Framing,
    /// Whether `UDP_SEGMENT` is used; turned off for good if the kernel
    /// refuses it at send time (EIO: no checksum offload on the way out).
    gso: bool,
    slots: Vec<Vec<u8>>,
    next_slot: usize,
    /// Slots (bit per slot) that queued segments point into: a read never
    /// goes into one of them before they are sent.
    in_use: u64,
    arena: Vec<u8>,
    arena_used: usize,
    segs: Vec<Seg>,
    msgs: Vec<Msg>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    names: Vec<libc::sockaddr_in>,
    ctrl: Vec<CmsgBuf>,
    answer: [u8; icmp::MAX_ANSWER_LEN],
    /// ICMP errors answered at most at the kernel's own default rate.
    tally: Tally,
    read_err: ErrorLog,
    send_err: ErrorLog,
    write_err: ErrorLog,
}

impl Tx {
    pub fn new(framing: Framing, gso: bool) -> Tx {
        let slots = match framing {
            Framing::Offload => SLOTS_OFFLOAD,
            Framing::Plain => SLOTS_PLAIN,
        };
        Tx {
            framing,
            gso,
            slots: (0..slots).map(|_| vec![0u8; SLOT_LEN]).collect(),
            next_slot: 0,
            in_use: 0,
            arena: vec![0u8; MAX_SEGS * segment::MAX_HEADER_LEN],
            arena_used: 0,
            segs: Vec::with_capacity(MAX_SEGS),
            msgs: Vec::with_capacity(MAX_MSGS),
            iovs: Vec::with_capacity(2 * MAX_SEGS),
            hdrs: vec![mmsg::zeroed_mmsghdr(); MAX_MSGS],
            names: vec![mmsg::zeroed_sockaddr(); MAX_MSGS],
            ctrl: vec![[0; 4]; MAX_MSGS],
            answer: [0; icmp::MAX_ANSWER_LEN],
            tally: Tally::default(),
            read_err: ErrorLog::new("TUN read failed"),
            send_err: ErrorLog::new("UDP send failed"),
            write_err: ErrorLog::new("TUN write of an ICMP error failed"),
        }
    }

    /// Reads until the TUN is empty or `max_reads` packets were read, sending
    /// as it goes; then sends the rest and publishes the counts. Returns how
    /// many packets were read.
    pub fn run_batch(&mut self, io: &LoopIo, max_reads: usize) -> usize {
        let mut got = 0;
        let tun = io.tun.as_fd();
        let table = io.table.load();
        // The last batch ended with a flush, so every slot is free: start at
        // the first, which a trickle of packets then keeps warm in the cache.
        debug_assert_eq!(self.in_use, 0);
        self.next_slot = 0;
        for _ in 0..max_reads {
            let k = self.next_slot;
            if self.in_use & (1 << k) != 0 {
                self.flush(io);
            }
            let n = match nix::unistd::read(tun, &mut self.slots[k]) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    // A deleted device keeps poll() readable: do not spin.
                    self.read_err.note(&e);
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    break;
                }
            };
            self.next_slot = (k + 1) % self.slots.len();
            got += 1;
            self.tally.tun_rx(n);
            self.handle(io, &table, k, n);
        }
        self.flush(io);
        io.counters.add(&mut self.tally);
        got
    }

    /// One read of `n` bytes in slot `k`.
    fn handle(&mut self, io: &LoopIo, table: &ForwardTable, k: usize, n: usize) {
        let (hdr, at) = match self.framing {
            Framing::Offload => match vnet::VnetHdr::decode(&self.slots[k][..n]) {
                Some(h) => (h, vnet::LEN),
                None => return self.tally.drop(DropReason::Malformed, 1),
            },
            Framing::Plain => (vnet::VnetHdr::default(), 0),
        };
        let pkt = &mut self.slots[k][at..n];
        let to = match forward::from_tun(table, pkt, &mut self.answer) {
            TunVerdict::Send(to) => to,
            TunVerdict::Drop { reason, answer } => {
                self.tally.drop(reason, 1);
                if let Some(len) = answer {
                    self.write_answer(io, len, reason);
                }
                return;
            }
        };
        match hdr.gso_kind() {
            vnet::GSO_TCPV4 => {
                let tso = match Tso::new(pkt, hdr.gso_size) {
                    Ok(t) => t,
                    Err(_) => return self.tally.drop(DropReason::Malformed, 1),
                };
                for i in 0..tso.count() {
                    self.make_room(io);
                    let hlen = tso.header_len();
                    let h = self.arena_used;
                    let pkt = &self.slots[k][at..n];
                    let range = tso.segment(pkt, i, &mut self.arena[h..h + hlen]);
                    self.arena_used += hlen.next_multiple_of(8);
                    self.push(
                        Seg {
                            hdr_at: h as u32,
                            hdr_len: hlen as u16,
                            slot: k as u16,
                            start: (at + range.start) as u32,
                            len: range.len() as u32,
                        },
                        to,
                    );
                }
            }
            vnet::GSO_NONE => {
                if hdr.needs_csum() {
                    let (start, off) = (usize::from(hdr.csum_start), usize::from(hdr.csum_offset));
                    if segment::complete_checksum(pkt, start, off).is_err() {
                        return self.tally.drop(DropReason::Malformed, 1);
                    }
                }
                self.make_room(io);
                self.push(
                    Seg {
                        hdr_at: 0,
                        hdr_len: 0,
                        slot: k as u16,
                        start: at as u32,
                        len: (n - at) as u32,
                    },
                    to,
                );
            }
            // Only TSO4 is offered to the kernel (TUNSETOFFLOAD).
            _ => self.tally.drop(DropReason::Malformed, 1),
        }
    }

    /// Sends what is queued if one more segment would not fit.
    fn make_room(&mut self, io: &LoopIo) {
        let arena_full = self.arena_used + segment::MAX_HEADER_LEN > self.arena.len();
        if self.segs.len() == MAX_SEGS || self.msgs.len() == MAX_MSGS || arena_full {
            self.flush(io);
        }
    }

    /// Queues a segment for `to`, in the last message if it can take it.
    fn push(&mut self, seg: Seg, to: SocketAddrV4) {
        let len = seg.datagram_len();
        self.in_use |= 1 << seg.slot;
        self.segs.push(seg);
        let first = self.segs.len() - 1;
        add_datagram(&mut self.msgs, self.gso, to, len, first);
    }

    /// Sends every queued message with `sendmmsg`; frees the slots.
    fn flush(&mut self, io: &LoopIo) {
        if !self.msgs.is_empty() {
            let sock = io.socket.as_fd();
            self.build();
            let mut off = 0;
            while off < self.msgs.len() {
                // SAFETY: `build` just pointed these headers at `names`,
                // `ctrl` and `iovs`, and the iovecs at `arena` and `slots`:
                // this struct's own buffers, which are neither moved (none
                // grows past its capacity) nor written while it sends.
                let r = unsafe { mmsg::sendmmsg(sock, &mut self.hdrs[off..self.msgs.len()]) };
                match r {
                    Ok(sent) => {
                        for m in &self.msgs[off..off + sent] {
                            for s in &self.segs[m.first..m.first + m.count] {
                                self.tally.udp_tx(s.datagram_len());
                            }
                        }
                        off += sent.max(1);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                    Err(e) => {
                        self.failed(sock, &io.counters, off, &e);
                        off += 1;
                    }
                }
            }
        }
        self.segs.clear();
        self.msgs.clear();
        self.iovs.clear();
        self.arena_used = 0;
        self.in_use = 0;
    }

    /// Fills the iovecs and message headers for the queued messages.
    fn build(&mut self) {
        for (i, m) in self.msgs.iter().enumerate() {
            let first_iov = self.iovs.len();
            for s in &self.segs[m.first..m.first + m.count] {
                if s.hdr_len > 0 {
                    let h = s.hdr_at as usize;
                    self.iovs
                        .push(mmsg::iovec(&self.arena[h..h + usize::from(s.hdr_len)]));
                }
                let slot = &self.slots[usize::from(s.slot)];
                self.iovs.push(mmsg::iovec(
                    &slot[s.start as usize..(s.start + s.len) as usize],
                ));
            }
            self.names[i] = mmsg::sockaddr(m.dst);
            let h = &mut self.hdrs[i];
            *h = mmsg::zeroed_mmsghdr();
            h.msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // The iovec vector never grows past its capacity, so this stays put.
            h.msg_hdr.msg_iov = self.iovs[first_iov..].as_mut_ptr();
            h.msg_hdr.msg_iovlen = self.iovs.len() - first_iov;
            if m.count > 1 {
                let clen = mmsg::gso_cmsg(&mut self.ctrl[i], m.size as u16);
                h.msg_hdr.msg_control = self.ctrl[i].as_mut_ptr().cast();
                h.msg_hdr.msg_controllen = clen;
            }
        }
    }

    /// The first message of `hdrs[off..]` could not be sent. A GSO message
    /// the kernel refuses (EIO: the route's device cannot checksum for us;
    /// EINVAL or EMSGSIZE: the route's MTU is below the segment size, so the
    /// datagrams need fragmenting) goes out one datagram at a time; EIO also
    /// turns GSO off for good.
    fn failed(
        &mut self,
        sock: BorrowedFd<'_>,
        counters: &Counters,
        off: usize,
        e: &std::io::Error,
    ) {
        let m = self.msgs[off];
        let gso_refused = matches!(
            e.raw_os_error(),
            Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::EMSGSIZE)
        );
        if m.count > 1 && gso_refused {
            if e.raw_os_error() == Some(libc::EIO) && self.gso {
                self.gso = false;
                counters.refuse_gso();
                tracing::warn!(error = %e, "the kernel refuses UDP_SEGMENT sends; sending one datagram per packet from now on");
            }
            let dst = mmsg::sockaddr(m.dst);
            for s in &self.segs[m.first..m.first + m.count] {
                let slot = &self.slots[usize::from(s.slot)];
                let payload = mmsg::iovec(&slot[s.start as usize..(s.start + s.len) as usize]);
                let h = s.hdr_at as usize;
                let head = mmsg::iovec(&self.arena[h..h + usize::from(s.hdr_len)]);
                let iov = if s.hdr_len > 0 {
                    &[head, payload][..]
                } else {
                    &[payload][..]
                };
                // SAFETY: the iovecs point into `arena` and a slot, live
                // and unchanged for the call.
                match unsafe { mmsg::sendmsg(sock, &dst, iov) } {
                    Ok(_) => self.tally.udp_tx(s.datagram_len()),
                    Err(e) => {
                        self.send_err.note(&e);
                        self.tally.drop(DropReason::IoError, 1);
                    }
                }
            }
            return;
        }
        self.send_err.note(e);
        self.tally.drop(DropReason::IoError, m.count);
    }

    /// Writes an ICMP error from the answer buffer back into the TUN.
    fn write_answer(&mut self, io: &LoopIo, len: usize, reason: DropReason) {
        if !io.icmp_allowed() {
            return;
        }
        let none = vnet::VnetHdr::default().encode();
        let answer = mmsg::iovec(&self.answer[..len]);
        let iov = match self.framing {
            Framing::Offload => &[mmsg::iovec(&none), answer][..],
            Framing::Plain => &[answer][..],
        };
        // SAFETY: the iovecs point at `none` and `self.answer`, live and
        // unchanged for the call.
        match unsafe { mmsg::writev(io.tun.as_fd(), iov) } {
            Ok(_) => {
                self.tally.tun_tx(len);
                if reason == DropReason::Unleased {
                    self.tally.icmp_unreachable();
                }
            }
            Err(e) => self.write_err.note(&e),
        }
    }
}
