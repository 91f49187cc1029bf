//! Receive-side coalescing (what Linux GRO does) for the udp fast path: the
//! TCP segments of one flow that arrive in one receive batch become one TUN
//! write of a GSO super-packet, so the kernel's TCP stack handles one packet
//! instead of dozens.
//!
//! Zero copy: the coalescer never copies payload. It keeps, per flow, a
//! rewritten copy of the first segment's IPv4+TCP header and the [`Span`]s of
//! every segment's payload in the caller's receive buffers, and describes each
//! write as `[vnet header, header, payload spans...]` for a `writev`.
//!
//! Only segments that any TCP receiver would treat as one stream are merged:
//! plain ACK or ACK|PSH data without IP options or fragmentation, in sequence,
//! with the same ACK, TCP options, TOS, TTL and DF, each no longer than the
//! first (the gso size). A merged write asks the kernel to compute a fresh
//! checksum over everything (`NEEDS_CSUM`), so each segment's own TCP checksum
//! is verified before it may join: a corrupted segment is written alone and
//! the kernel drops it. Per flow, packets reach the TUN in the order they were
//! received; anything that cannot join a held flow first pushes that flow out.
//!
//! A flow is emitted as soon as it cannot grow (a short or PSH segment, the
//! segment cap, or no room for another full segment under 64 KiB), else when
//! the caller flushes at the end of its receive batch.

use crate::csum::{self, Sum};
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
/// Segments per coalesced write.
pub const MAX_SEGMENTS: usize = 64;

const IP_HDR: usize = 20;
const MAX_TCP_HDR: usize = 60;
const MAX_IP_LEN: usize = 65535;
const PROTO_TCP: u8 = 6;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const IP_DF: u8 = 0x40;
/// Byte offsets into an IPv4 (IHL 5) + TCP packet.
const TOS: usize = 1;
const TTL: usize = 8;
const TCP_SEQ: usize = IP_HDR + 4;
const TCP_ACK_NO: usize = IP_HDR + 8;
const TCP_OFF: usize = IP_HDR + 12;
const TCP_FLAGS: usize = IP_HDR + 13;
const TCP_WINDOW: usize = IP_HDR + 14;
const TCP_CSUM: usize = IP_HDR + 16;
const TCP_OPTIONS: usize = IP_HDR + 20;

/// A TCP flow: addresses and the four port bytes as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Key {
    src: [u8; 4],
    dst: [u8; 4],
    ports: [u8; 4],
}

/// What a packet is to the coalescer.
enum Kind {
    /// Not TCP: no flow can hold it.
    Other,
    /// TCP whose ports cannot be read (a non-first fragment): it may belong
    /// to any held flow between these addresses.
    TcpNoPorts { src: [u8; 4], dst: [u8; 4] },
    /// TCP that must be written alone.
    Alone(Key),
    /// A segment that may be coalesced.
    Segment(Seg),
}

struct Seg {
    key: Key,
    seq: u32,
    /// IP + TCP header bytes.
    hdr_len: usize,
    payload: usize,
    psh: bool,
}

fn classify(pkt: &[u8]) -> Kind {
    if pkt.len() < IP_HDR || pkt[0] >> 4 != 4 || pkt[9] != PROTO_TCP {
        return Kind::Other;
    }
    let src: [u8; 4] = [pkt[12], pkt[13], pkt[14], pkt[15]];
    let dst: [u8; 4] = [pkt[16], pkt[17], pkt[18], pkt[19]];
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
    if frag & 0x1fff != 0 || ihl < IP_HDR || pkt.len() < ihl + 4 {
        return Kind::TcpNoPorts { src, dst };
    }
    let key = Key {
        src,
        dst,
        ports: [pkt[ihl], pkt[ihl + 1], pkt[ihl + 2], pkt[ihl + 3]],
    };
    let more_fragments = frag & 0x2000 != 0;
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if ihl != IP_HDR || more_fragments || total != pkt.len() || pkt.len() < TCP_OPTIONS {
        return Kind::Alone(key);
    }
    let hdr_len = IP_HDR + usize::from(pkt[TCP_OFF] >> 4) * 4;
    let flags = pkt[TCP_FLAGS];
    // Reserved/NS bits, and every flag but ACK and PSH, end coalescing.
    let plain = pkt[TCP_OFF] & 0x0f == 0 && flags & !TCP_PSH == TCP_ACK;
    if hdr_len < TCP_OPTIONS || hdr_len >= pkt.len() || !plain {
        return Kind::Alone(key);
    }
    let tcp_len = (pkt.len() - IP_HDR) as u16;
    let sum = csum::pseudo_header(src, dst, PROTO_TCP, tcp_len).add(Sum::of(&pkt[IP_HDR..]));
    if sum.0 != 0xffff {
        return Kind::Alone(key);
    }
    Kind::Segment(Seg {
        key,
        seq: be32(&pkt[TCP_SEQ..]),
        hdr_len,
        payload: pkt.len() - hdr_len,
        psh: flags & TCP_PSH != 0,
    })
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// One held flow. `head` is the first segment's header, rewritten on emit.
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

    fn can_append(&self, pkt: &[u8], seg: &Seg) -> bool {
        let h = &self.head;
        seg.seq == self.next_seq
            && seg.hdr_len == self.hdr_len
            && pkt[TCP_ACK_NO..TCP_ACK_NO + 4] == h[TCP_ACK_NO..TCP_ACK_NO + 4]
            && pkt[TCP_OPTIONS..seg.hdr_len] == h[TCP_OPTIONS..self.hdr_len]
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
        self.next_seq = seg.seq.wrapping_add(seg.payload as u32);
        self.psh = seg.psh;
        self.window = [pkt[TCP_WINDOW], pkt[TCP_WINDOW + 1]];
    }

    /// Whether the flow cannot take another segment after `seg` joined it.
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
        let tcp_len = (hl - IP_HDR + self.payload) as u16;
        let h = &mut self.head;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        csum::fill_ipv4_header(&mut h[..IP_HDR]);
        if self.psh {
            h[TCP_FLAGS] |= TCP_PSH;
        }
        h[TCP_WINDOW..TCP_WINDOW + 2].copy_from_slice(&self.window);
        // The partial checksum: only the pseudo-header, not complemented; the
        // kernel adds header and payload (NEEDS_CSUM).
        let partial = csum::pseudo_header(self.key.src, self.key.dst, PROTO_TCP, tcp_len);
        h[TCP_CSUM..TCP_CSUM + 2].copy_from_slice(&partial.0.to_be_bytes());
        emit(Write {
            vnet: VnetHdr {
                flags: vnet::F_NEEDS_CSUM,
                gso_type: vnet::GSO_TCPV4,
                hdr_len: hl as u16,
                gso_size: self.gso_size as u16,
                csum_start: IP_HDR as u16,
                csum_offset: (TCP_CSUM - IP_HDR) as u16,
            },
            head: &self.head[..hl],
            parts: &self.parts[..self.n],
            segments: self.n,
        });
    }
}

fn emit_alone(at: Span, emit: &mut dyn FnMut(Write<'_>)) {
    emit(Write {
        vnet: VnetHdr::default(),
        head: &[],
        parts: std::slice::from_ref(&at),
        segments: 1,
    });
}

/// Coalesces the TCP segments of one receive batch; see the module docs.
pub struct Coalescer {
    flows: Box<[Flow]>,
    next_age: u64,
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
        }
    }

    /// One packet that passed the receive checks: a valid IPv4 packet
    /// (`packet::parse` ok, total length == `pkt.len()`), whose bytes are `pkt`
    /// and which lies at `at` in the caller's buffers (`at.len == pkt.len()`).
    /// Emits, in the order they must reach the TUN, zero or more writes
    /// (earlier held packets and/or this one).
    pub fn push(&mut self, pkt: &[u8], at: Span, emit: &mut dyn FnMut(Write<'_>)) {
        debug_assert_eq!(at.len as usize, pkt.len());
        let seg = match classify(pkt) {
            Kind::Other => return emit_alone(at, emit),
            Kind::TcpNoPorts { src, dst } => {
                self.emit_where(|k| k.src == src && k.dst == dst, emit);
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
        if seg.psh {
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
        let flow = &mut self.flows[i];
        flow.start(pkt, &seg, at, age);
        if flow.complete(&seg) {
            flow.emit(emit);
        }
    }

    /// Emits every held flow (end of a receive batch), oldest first.
    pub fn flush(&mut self, emit: &mut dyn FnMut(Write<'_>)) {
        self.emit_where(|_| true, emit);
    }

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
#[path = "coalesce_tests.rs"]
mod tests;
