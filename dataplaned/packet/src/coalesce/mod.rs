//! Receive-side coalescing (what Linux GRO does) for the udp fast path: the
//! TCP segments, and the UDP datagrams, of one flow that arrive in one
//! receive batch become one TUN write of a GSO super-packet, so the kernel's
//! stack handles one packet instead of dozens.
//!
//! Zero copy: the coalescer never copies payload. It keeps, per flow, a
//! rewritten copy of the first packet's IPv4+TCP/UDP header and the [`Span`]s
//! of every packet's payload in the caller's receive buffers, and describes
//! each write as `[vnet header, header, payload spans...]` for a `writev`.
//!
//! Only packets that any receiver would treat as one stream are merged. TCP:
//! plain ACK or ACK|PSH data without IP options or fragmentation, in
//! sequence, with the same ACK, TCP options, TOS, TTL and DF, each no longer
//! than the first (the gso size); written as `GSO_TCPV4`. UDP (Linux UDP GRO
//! without fraglist, wireguard-go's udpGRO): datagrams without IP options or
//! fragmentation, UDP length equal to the IP payload, some payload, the same
//! TOS, TTL and DF, each no longer than the first; written as `GSO_UDP_L4`,
//! which the kernel splits back into datagrams of the first one's size (the
//! last may be shorter) as it delivers them. Datagrams carry no sequence
//! number: they join in the order received. TCP and UDP flows are apart
//! even on the same ports (the protocol is part of the flow key).
//!
//! A merged write asks the kernel to compute a fresh checksum for every
//! packet it is cut into (`NEEDS_CSUM`), so each packet's own checksum is
//! verified before it may join: a corrupted one is written alone and the
//! kernel drops it. A UDP datagram without a checksum (0) is written alone
//! too, since the merged write would give it one it never had. Per flow,
//! packets reach the TUN in the order they were received; anything that
//! cannot join a held flow first pushes that flow out.
//!
//! A flow is emitted as soon as it cannot grow (a short or PSH segment, a
//! short datagram, the segment cap, or no room for another full one under
//! 64 KiB), else when the caller flushes at the end of its receive batch.
//!
//! A TUN takes `GSO_UDP_L4` writes from Linux 6.2 on (`TUN_F_USO4`); where it
//! does not, [`Coalescer::tcp_only`] writes UDP datagrams one by one.

use crate::csum;
use crate::vnet::{self, VnetHdr};

/// Where bytes are in the caller's receive buffers; opaque to the coalescer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub buf: u32,
    pub start: u32,
    pub len: u32,
}

/// One write to the TUN: `vnet` (encode with [`VnetHdr::encode`]), then `head`
/// (may be empty), then the bytes of each span in order. `segments` = how many
/// received packets it carries.
#[derive(Debug)]
pub struct Write<'a> {
    pub vnet: VnetHdr,
    pub head: &'a [u8],
    pub parts: &'a [Span],
    pub segments: usize,
}

/// Flows held at once.
pub const MAX_FLOWS: usize = 16;
/// Segments per coalesced write. The kernel refuses a `GSO_UDP_L4` write of
/// more than 64 datagrams (`UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;

mod classify;
use classify::*;

/// One held flow. `head` is the first packet's header, rewritten on emit.
#[derive(Clone)]
struct Flow {
    live: bool,
    /// Order of creation; the lowest is the oldest.
    age: u64,
    key: Key,
    head: [u8; IP_HDR + MAX_TCP_HDR],
    hdr_len: usize,
    /// The whole first packet, for a flow of one.
    whole: Span,
    parts: [Span; MAX_SEGMENTS],
    n: usize,
    next_seq: u32,
    gso_size: usize,
    /// Payload bytes of all segments.
    payload: usize,
    psh: bool,
    window: [u8; 2],
}

impl Flow {
    fn empty() -> Flow {
        Flow {
            live: false,
            age: 0,
            key: Key::default(),
            head: [0; IP_HDR + MAX_TCP_HDR],
            hdr_len: 0,
            whole: Span::default(),
            parts: [Span::default(); MAX_SEGMENTS],
            n: 0,
            next_seq: 0,
            gso_size: 0,
            payload: 0,
            psh: false,
            window: [0; 2],
        }
    }

    fn start(&mut self, pkt: &[u8], seg: &Seg, at: Span, age: u64) {
        self.live = true;
        self.age = age;
        self.key = seg.key;
        self.head[..seg.hdr_len].copy_from_slice(&pkt[..seg.hdr_len]);
        self.hdr_len = seg.hdr_len;
        self.whole = at;
        self.n = 0;
        self.gso_size = seg.payload;
        self.payload = 0;
        self.append(pkt, seg, at);
    }

    fn is_tcp(&self) -> bool {
        self.key.proto == PROTO_TCP
    }

    fn can_append(&self, pkt: &[u8], seg: &Seg) -> bool {
        let h = &self.head;
        // Datagrams have no sequence, acknowledgement or options to agree on.
        let same_stream = !self.is_tcp()
            || (seg.seq == self.next_seq
                && pkt[TCP_ACK_NO..TCP_ACK_NO + 4] == h[TCP_ACK_NO..TCP_ACK_NO + 4]
                && pkt[TCP_OPTIONS..seg.hdr_len] == h[TCP_OPTIONS..self.hdr_len]);
        seg.hdr_len == self.hdr_len
            && same_stream
            && pkt[TOS] == h[TOS]
            && pkt[TTL] == h[TTL]
            && pkt[6] & IP_DF == h[6] & IP_DF
            && seg.payload <= self.gso_size
            && self.n < MAX_SEGMENTS
            && self.hdr_len + self.payload + seg.payload <= MAX_IP_LEN
    }

    fn append(&mut self, pkt: &[u8], seg: &Seg, at: Span) {
        self.parts[self.n] = Span {
            buf: at.buf,
            start: at.start + seg.hdr_len as u32,
            len: seg.payload as u32,
        };
        self.n += 1;
        self.payload += seg.payload;
        if self.is_tcp() {
            self.next_seq = seg.seq.wrapping_add(seg.payload as u32);
            self.psh = seg.psh;
            self.window = [pkt[TCP_WINDOW], pkt[TCP_WINDOW + 1]];
        }
    }

    /// Whether the flow cannot take another packet after `seg` joined it.
    fn complete(&self, seg: &Seg) -> bool {
        seg.psh
            || seg.payload < self.gso_size
            || self.n == MAX_SEGMENTS
            || self.hdr_len + self.payload + self.gso_size > MAX_IP_LEN
    }

    /// Ends the flow and hands its write to `emit`.
    fn emit(&mut self, emit: &mut dyn FnMut(Write<'_>)) {
        self.live = false;
        if self.n == 1 {
            return emit_alone(self.whole, emit);
        }
        let hl = self.hdr_len;
        let total = (hl + self.payload) as u16;
        let l4_len = (hl - IP_HDR + self.payload) as u16;
        let h = &mut self.head;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        csum::fill_ipv4_header(&mut h[..IP_HDR]);
        let (gso_type, csum_at) = if self.key.proto == PROTO_TCP {
            if self.psh {
                h[TCP_FLAGS] |= TCP_PSH;
            }
            h[TCP_WINDOW..TCP_WINDOW + 2].copy_from_slice(&self.window);
            (vnet::GSO_TCPV4, TCP_CSUM)
        } else {
            // The kernel sets each datagram's own length when it splits.
            h[UDP_LEN..UDP_LEN + 2].copy_from_slice(&l4_len.to_be_bytes());
            (vnet::GSO_UDP_L4, UDP_CSUM)
        };
        // The partial checksum: only the pseudo-header, not complemented; the
        // kernel adds header and payload (NEEDS_CSUM).
        let partial = csum::pseudo_header(self.key.src, self.key.dst, self.key.proto, l4_len);
        h[csum_at..csum_at + 2].copy_from_slice(&partial.0.to_be_bytes());
        emit(Write {
            vnet: VnetHdr {
                flags: vnet::F_NEEDS_CSUM,
                gso_type,
                hdr_len: hl as u16,
                gso_size: self.gso_size as u16,
                csum_start: IP_HDR as u16,
                csum_offset: (csum_at - IP_HDR) as u16,
            },
            head: &self.head[..hl],
            parts: &self.parts[..self.n],
            segments: self.n,
        });
    }
}

/// The received packets a write carries, where they still lie whole in the
/// caller's buffers (the coalescer rewrites only its own copy of the first
/// header): every segment of a flow has the same header length.
#[inline]
pub fn originals<'a>(w: &'a Write<'_>) -> impl Iterator<Item = Span> + 'a {
    let hl = w.head.len() as u32;
    w.parts.iter().map(move |p| Span {
        buf: p.buf,
        start: p.start - hl,
        len: p.len + hl,
    })
}

fn emit_alone(at: Span, emit: &mut dyn FnMut(Write<'_>)) {
    emit(Write {
        vnet: VnetHdr::default(),
        head: &[],
        parts: std::slice::from_ref(&at),
        segments: 1,
    });
}

/// Coalesces the TCP segments and UDP datagrams of one receive batch; see
/// the module docs.
pub struct Coalescer {
    flows: Box<[Flow]>,
    next_age: u64,
    /// Whether UDP datagrams are coalesced too.
    udp: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer::new()
    }
}

impl Coalescer {
    /// Allocates all the memory the coalescer will ever use.
    pub fn new() -> Coalescer {
        Coalescer {
            flows: vec![Flow::empty(); MAX_FLOWS].into_boxed_slice(),
            next_age: 0,
            udp: true,
        }
    }

    /// A coalescer that writes every UDP datagram alone: for a TUN that does
    /// not take `GSO_UDP_L4` writes (before Linux 6.2, `virtio_net_hdr_to_skb`
    /// refuses them with EINVAL; `TUNSETOFFLOAD` with `TUN_F_USO4` tells).
    pub fn tcp_only() -> Coalescer {
        Coalescer {
            udp: false,
            ..Coalescer::new()
        }
    }

    /// One packet that passed the receive checks: a valid IPv4 packet
    /// (`packet::parse` ok, total length == `pkt.len()`), whose bytes are `pkt`
    /// and which lies at `at` in the caller's buffers (`at.len == pkt.len()`).
    /// Emits, in the order they must reach the TUN, zero or more writes
    /// (earlier held packets and/or this one).
    pub fn push(&mut self, pkt: &[u8], at: Span, emit: &mut dyn FnMut(Write<'_>)) {
        debug_assert_eq!(at.len as usize, pkt.len());
        let seg = match classify(pkt, self.udp) {
            Kind::Other => return emit_alone(at, emit),
            Kind::NoPorts { src, dst, proto } => {
                self.emit_where(|k| k.src == src && k.dst == dst && k.proto == proto, emit);
                return emit_alone(at, emit);
            }
            Kind::Alone(key) => {
                if let Some(i) = self.find(key) {
                    self.flows[i].emit(emit);
                }
                return emit_alone(at, emit);
            }
            Kind::Segment(seg) => seg,
        };
        if let Some(i) = self.find(seg.key) {
            let flow = &mut self.flows[i];
            if flow.can_append(pkt, &seg) {
                flow.append(pkt, &seg, at);
                if flow.complete(&seg) {
                    flow.emit(emit);
                }
                return;
            }
            flow.emit(emit);
        }
        if seg.psh || seg.hdr_len + 2 * seg.payload > MAX_IP_LEN {
            // It could not take another one: no flow for it (and no older
            // flow pushed out of a full table for it).
            return emit_alone(at, emit);
        }
        let i = match self.flows.iter().position(|f| !f.live) {
            Some(i) => i,
            None => {
                let i = self.oldest(|_| true).expect("a full table has flows");
                self.flows[i].emit(emit);
                i
            }
        };
        let age = self.next_age;
        self.next_age += 1;
        self.flows[i].start(pkt, &seg, at, age);
    }

    /// Emits every held flow (end of a receive batch), oldest first.
    #[inline]
    pub fn flush(&mut self, emit: &mut dyn FnMut(Write<'_>)) {
        self.emit_where(|_| true, emit);
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.flows.iter().all(|f| !f.live)
    }

    fn find(&self, key: Key) -> Option<usize> {
        self.flows.iter().position(|f| f.live && f.key == key)
    }

    fn oldest(&self, pred: impl Fn(&Key) -> bool) -> Option<usize> {
        (0..self.flows.len())
            .filter(|&i| self.flows[i].live && pred(&self.flows[i].key))
            .min_by_key(|&i| self.flows[i].age)
    }

    /// Emits the held flows whose key matches, oldest first.
    fn emit_where(&mut self, pred: impl Fn(&Key) -> bool, emit: &mut dyn FnMut(Write<'_>)) {
        while let Some(i) = self.oldest(&pred) {
            self.flows[i].emit(emit);
        }
    }
}

#[cfg(test)]
mod tests;
