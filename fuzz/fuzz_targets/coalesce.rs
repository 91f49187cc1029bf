//! Receive-side coalescing (coalesce.rs) on packet sequences built from the
//! input. Never a panic; every pushed packet is delivered exactly once, per
//! flow in the order pushed; a write carrying one packet is that packet's
//! bytes unchanged; a coalesced write is in-sequence verified ACK(/PSH)
//! segments of one flow whose payloads it carries in order, is a valid IPv4
//! packet whose completed TCP checksum verifies, and resegments (segment.rs,
//! as the kernel would) into segments equal to the ones received but for the
//! IP id and the window; no write exceeds 65535 bytes or MAX_SEGMENTS parts.
//!
//! Input: a list of ops, most of them one byte (a small generator, so the
//! fuzzer reaches the coalescing paths without having to find checksums):
//! - `0b00fffff`: the next segment of flow f (32 flows over 8 address pairs):
//!   in sequence, a full mss of payload, ACK, checksums right;
//! - `0b01fffff v [x]`: the same with choices from `v` (sequence: next,
//!   duplicate, gap, arbitrary; flags; payload length: mss, short, empty,
//!   longer) and, if `v & 0x80`, from `x` (corrupt a bit, new ack, new
//!   timestamp, TTL, TOS, DF, IP options, fragment bits), each taking more
//!   bytes where it needs a value;
//! - `0b10fffff p`: flow f's mss and TCP options from `p`;
//! - `0xff`: flush (the end of a receive batch);
//! - `0b11xxxxx` (other): `len` (2 bytes, mod 2048) raw bytes; with `x & 1`
//!   the IPv4 version, total length and header checksum are fixed up.
//!
//! Packets that fail `packet::parse` are not pushed (the receive checks drop
//! them before the coalescer).
#![no_main]

use kolach_dataplaned::coalesce::{Coalescer, Span, Write, MAX_SEGMENTS};
use kolach_dataplaned::packet;
use kolach_dataplaned::segment::{complete_checksum, Tso, MAX_HEADER_LEN};
use kolach_dataplaned::vnet::{self, VnetHdr};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const PROTO_TCP: u8 = 6;
const MAX_PACKETS: usize = 256;
const MAX_BYTES: usize = 192 * 1024;
const MSS_TABLE: [usize; 8] = [1448, 1000, 536, 100, 7, 8960, 16000, 1];

/// Reads the input; 0 once it is used up.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
}

#[derive(Clone, Copy)]
struct Flow {
    next_seq: u32,
    prev_seq: u32,
    ack: u32,
    tsval: u32,
    mss: usize,
    /// 0 none, 1 timestamps (NOP NOP TS), 2 an MSS option, 3 40 bytes.
    opts: u8,
}

impl Flow {
    fn new(f: usize) -> Flow {
        Flow {
            next_seq: 1000 * f as u32,
            prev_seq: 1000 * f as u32,
            ack: 7 * f as u32,
            tsval: 1,
            mss: MSS_TABLE[f & 7],
            opts: ((f >> 3) & 3) as u8,
        }
    }

    fn options(&self) -> Vec<u8> {
        let ts = |v: u32| {
            let mut o = vec![1, 1, 8, 10];
            o.extend_from_slice(&v.to_be_bytes());
            o.extend_from_slice(&0x0102_0304u32.to_be_bytes());
            o
        };
        match self.opts {
            0 => vec![],
            1 => ts(self.tsval),
            2 => vec![2, 4, 0x05, 0xb4],
            _ => [vec![1; 28], ts(self.tsval)].concat(),
        }
    }
}

fn addrs(f: usize) -> ([u8; 4], [u8; 4], [u8; 4]) {
    let pair = (f >> 2) as u8;
    let port = 1000 + (f & 3) as u16;
    let mut ports = [0u8; 4];
    ports[0..2].copy_from_slice(&port.to_be_bytes());
    ports[2..4].copy_from_slice(&5201u16.to_be_bytes());
    ([10, 50, 7, 10 + pair], [10, 50, 18, 2], ports)
}

/// The 12-byte IPv4 pseudo-header of a TCP segment of `len` bytes.
fn pseudo(src: &[u8], dst: &[u8], len: usize) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[0..4].copy_from_slice(src);
    p[4..8].copy_from_slice(dst);
    p[9] = PROTO_TCP;
    p[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

/// The ones'-complement sum of `b` as 16-bit big-endian words, unfolded
/// (the oracle: plain, and independent of the code under test).
fn sum16(b: &[u8]) -> u64 {
    let mut words = b.chunks_exact(2);
    let mut s: u64 = (&mut words)
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = words.remainder() {
        s += u64::from(*last) << 8;
    }
    s
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The TCP checksum over pseudo-header + `pkt[ihl..]` (checksum field as is).
fn tcp_sum(pkt: &[u8], ihl: usize) -> u16 {
    fold(sum16(&pseudo(&pkt[12..16], &pkt[16..20], pkt.len() - ihl)) + sum16(&pkt[ihl..]))
}

fn tcp_checksum_ok(pkt: &[u8], ihl: usize) -> bool {
    tcp_sum(pkt, ihl) == 0xffff
}

/// Payload bytes: a fixed pattern, so big payloads cost a copy, not a loop.
fn pattern() -> &'static [u8] {
    static P: OnceLock<Vec<u8>> = OnceLock::new();
    P.get_or_init(|| (0..70_000usize).map(|k| (k * 7 + k / 251) as u8).collect())
}

fn fill_ip_checksum(p: &mut [u8], ihl: usize) {
    p[10] = 0;
    p[11] = 0;
    let c = packet::checksum(&p[..ihl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// One generated TCP segment of flow `f`.
fn generate(inp: &mut Input, op: u8, flows: &mut [Flow], n: usize) -> Vec<u8> {
    let f = usize::from(op & 0x1f);
    let (src, dst, ports) = addrs(f);
    let flow = &mut flows[f];
    let (mut seq, mut flags, mut payload_len) = (flow.next_seq, ACK, flow.mss);
    let (mut ttl, mut tos, mut frag, mut ip_opts) = (64u8, 0u8, 0x4000u16, 0usize);
    let mut corrupt = None;
    if op & 0x40 != 0 {
        let v = inp.byte();
        seq = match v & 3 {
            0 => flow.next_seq,
            1 => flow.prev_seq,
            2 => flow.next_seq.wrapping_add(u32::from(inp.byte()) + 1),
            _ => inp.u32(),
        };
        flags = match (v >> 2) & 7 {
            0 => ACK,
            1 => ACK | PSH,
            2 => ACK | 0x01,
            3 => ACK | 0x02,
            4 => 0x04,
            5 => ACK | 0x20,
            6 => ACK | 0x40 | 0x80,
            _ => inp.byte(),
        };
        payload_len = match (v >> 5) & 3 {
            0 => flow.mss,
            1 => usize::from(inp.byte()) % flow.mss,
            2 => 0,
            _ => flow.mss + usize::from(inp.byte()) + 1,
        };
        if v & 0x80 != 0 {
            let x = inp.byte();
            if x & 0x01 != 0 {
                corrupt = Some(inp.u16());
            }
            if x & 0x02 != 0 {
                flow.ack = flow.ack.wrapping_add(u32::from(inp.byte()) + 1);
            }
            if x & 0x04 != 0 {
                flow.tsval = flow.tsval.wrapping_add(1);
            }
            if x & 0x08 != 0 {
                ttl = inp.byte();
            }
            if x & 0x10 != 0 {
                tos = inp.byte();
            }
            if x & 0x20 != 0 {
                frag ^= 0x4000;
            }
            if x & 0x40 != 0 {
                ip_opts = 4 * usize::from(inp.byte() % 11);
            }
            if x & 0x80 != 0 {
                // MF, reserved, an offset: all from the input.
                frag = (frag & 0x4000) | (inp.u16() & 0xbfff);
            }
        }
    }
    let opts = flow.options();
    let ihl = 20 + ip_opts;
    let thl = 20 + opts.len();
    let len = ihl + thl + payload_len;
    let mut p = vec![0u8; len];
    p[0] = 0x40 | (ihl / 4) as u8;
    p[1] = tos;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[4..6].copy_from_slice(&(n as u16).to_be_bytes());
    p[6..8].copy_from_slice(&frag.to_be_bytes());
    p[8] = ttl;
    p[9] = PROTO_TCP;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..ihl].fill(1); // NOP options
    let t = &mut p[ihl..];
    t[0..4].copy_from_slice(&ports);
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&flow.ack.to_be_bytes());
    t[12] = ((thl / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&(n as u16 ^ 0x5a5a).to_be_bytes());
    t[20..thl].copy_from_slice(&opts);
    t[thl..].copy_from_slice(&pattern()[n % 256..][..payload_len]);
    let c = !tcp_sum(&p, ihl);
    p[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
    fill_ip_checksum(&mut p, ihl);
    if let Some(at) = corrupt {
        // A flipped bit in the TCP header or payload: the IP header stays valid.
        let pos = ihl + usize::from(at >> 3) % (len - ihl);
        p[pos] ^= 1 << (at & 7);
    }
    flow.prev_seq = seq;
    flow.next_seq = seq.wrapping_add(payload_len as u32);
    p
}

fn raw(inp: &mut Input, op: u8) -> Vec<u8> {
    let len = usize::from(inp.u16()) % 2048;
    let mut p: Vec<u8> = (0..len).map(|_| inp.byte()).collect();
    if op & 1 != 0 && len >= 20 {
        p[0] = 0x40 | (p[0] & 0x0f);
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        let ihl = usize::from(p[0] & 0x0f) * 4;
        if ihl >= 20 && ihl <= len {
            fill_ip_checksum(&mut p, ihl);
        }
    }
    p
}

/// A write, copied out of the coalescer.
struct Out {
    vnet: VnetHdr,
    head: Vec<u8>,
    parts: Vec<Span>,
    segments: usize,
}

/// How a pushed packet relates to others for ordering: TCP with readable
/// ports has a flow key; a non-first fragment only its addresses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    None,
    Key([u8; 12]),
    Addrs([u8; 8]),
}

fn order_of(p: &[u8]) -> Order {
    let info = packet::parse(p).expect("pushed packets parse");
    if info.protocol != PROTO_TCP {
        return Order::None;
    }
    let hl = info.header_len;
    if info.is_non_first_fragment() || p.len() < hl + 4 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&p[12..20]);
        return Order::Addrs(a);
    }
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&p[12..20]);
    k[8..].copy_from_slice(&p[hl..hl + 4]);
    Order::Key(k)
}

fn related(a: Order, b: Order) -> bool {
    match (a, b) {
        (Order::None, _) | (_, Order::None) => false,
        (Order::Key(x), Order::Key(y)) => x == y,
        (Order::Key(x), Order::Addrs(y)) | (Order::Addrs(y), Order::Key(x)) => x[..8] == y,
        (Order::Addrs(x), Order::Addrs(y)) => x == y,
    }
}

fn check_single(w: &Out, pkts: &[Vec<u8>]) -> usize {
    assert_eq!(
        w.vnet,
        VnetHdr::default(),
        "a single packet needs no offload"
    );
    assert_eq!(w.parts.len(), 1, "no header but {} parts", w.parts.len());
    assert_eq!(w.segments, 1);
    let s = w.parts[0];
    let p = &pkts[s.buf as usize];
    assert_eq!(
        (s.start, s.len as usize),
        (0, p.len()),
        "not the whole packet"
    );
    s.buf as usize
}

fn check_coalesced(w: &Out, pkts: &[Vec<u8>], bytes: &[u8]) {
    let n = w.parts.len();
    assert!(n >= 2, "a header for {n} part(s)");
    assert_eq!(w.segments, n);
    let hl = w.head.len();
    let gso = usize::from(w.vnet.gso_size);
    assert_eq!(
        (w.vnet.flags, w.vnet.gso_type, usize::from(w.vnet.hdr_len)),
        (vnet::F_NEEDS_CSUM, vnet::GSO_TCPV4, hl)
    );
    assert_eq!((w.vnet.csum_start, w.vnet.csum_offset), (20, 16));
    assert!(hl <= MAX_HEADER_LEN);

    // The members: in push order, one flow, in sequence, verified, ACK/PSH.
    for s in &w.parts {
        assert!(
            pkts[s.buf as usize].len() > 40,
            "a packet without payload joined"
        );
    }
    let first = &pkts[w.parts[0].buf as usize];
    let mut seq = u32::from_be_bytes(first[24..28].try_into().unwrap());
    for (k, s) in w.parts.iter().enumerate() {
        let p = &pkts[s.buf as usize];
        if k > 0 {
            assert!(s.buf > w.parts[k - 1].buf, "parts out of push order");
        }
        assert_eq!(p[0], 0x45, "a segment with IP options joined");
        assert_eq!(
            u16::from_be_bytes([p[6], p[7]]) & 0x3fff,
            0,
            "a fragment joined"
        );
        assert_eq!(&p[12..24], &first[12..24], "another flow joined");
        assert!(
            tcp_checksum_ok(p, 20),
            "a segment with a bad checksum joined"
        );
        let phl = 20 + usize::from(p[32] >> 4) * 4;
        assert_eq!(phl, hl, "header lengths differ");
        assert_eq!(&p[28..32], &first[28..32], "acks differ");
        assert_eq!(&p[40..phl], &first[40..hl], "TCP options differ");
        assert_eq!(
            (p[1], p[8], p[6] & 0x40),
            (first[1], first[8], first[6] & 0x40)
        );
        let flags = p[33];
        assert!(
            flags == ACK || (flags == ACK | PSH && k + 1 == n),
            "flags {flags:#x} joined"
        );
        assert_eq!(
            u32::from_be_bytes(p[24..28].try_into().unwrap()),
            seq,
            "out of sequence"
        );
        assert_eq!(
            (s.start as usize, s.len as usize),
            (phl, p.len() - phl),
            "payload span"
        );
        assert!(s.len > 0);
        if k + 1 < n {
            assert_eq!(s.len as usize, gso, "part {k} is not gso_size");
        } else {
            assert!(s.len as usize <= gso, "last part longer than gso_size");
        }
        seq = seq.wrapping_add(s.len);
    }

    // The packet the kernel gets: valid, and its completed checksum verifies.
    let mut merged = bytes.to_vec();
    let info = packet::parse(&merged).unwrap_or_else(|e| panic!("merged packet: {e}"));
    assert_eq!((info.header_len, info.protocol), (20, PROTO_TCP));
    assert_eq!(&merged[..hl], &w.head[..]);
    complete_checksum(&mut merged, 20, 16).expect("checksum field in range");
    assert!(
        tcp_checksum_ok(&merged, 20),
        "completed checksum does not verify"
    );

    // Cut again as the kernel would: the segments received, but for IP id and
    // window (the merged header carries the last one's window).
    let tso = Tso::new(&merged, w.vnet.gso_size).expect("a merged packet resegments");
    assert_eq!(tso.count(), n);
    for (k, s) in w.parts.iter().enumerate() {
        let p = &pkts[s.buf as usize];
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let r = tso.segment(&merged, k, &mut hdr);
        assert_eq!(&merged[r], &p[hl..], "segment {k}: payload");
        // Byte 6: DF is compared above; the reserved bit is not a join rule.
        for b in (0..hl).filter(|b| !matches!(b, 4..=6 | 10 | 11 | 34..=37)) {
            assert_eq!(hdr[b], p[b], "segment {k}: header byte {b}");
        }
        assert_eq!(hdr[6] & 0x7f, p[6] & 0x7f, "segment {k}: DF/fragment bits");
    }
    assert_eq!(
        &w.head[34..36],
        &pkts[w.parts[n - 1].buf as usize][34..36],
        "window"
    );
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let mut flows: Vec<Flow> = (0..32).map(Flow::new).collect();
    let mut pkts: Vec<Vec<u8>> = Vec::new();
    let mut pushed: Vec<usize> = Vec::new();
    let mut outs: Vec<Out> = Vec::new();
    let mut c = Coalescer::new();
    let mut total = 0;
    let mut emit = |w: Write<'_>| {
        outs.push(Out {
            vnet: w.vnet,
            head: w.head.to_vec(),
            parts: w.parts.to_vec(),
            segments: w.segments,
        })
    };
    while !inp.0.is_empty() && pkts.len() < MAX_PACKETS && total < MAX_BYTES {
        let op = inp.byte();
        let p = match op >> 6 {
            0 | 1 => generate(&mut inp, op, &mut flows, pkts.len()),
            2 => {
                let f = &mut flows[usize::from(op & 0x1f)];
                let x = inp.byte();
                f.mss = MSS_TABLE[usize::from(x & 7)];
                f.opts = (x >> 3) & 3;
                continue;
            }
            _ if op == 0xff => {
                c.flush(&mut emit);
                assert!(c.is_empty());
                continue;
            }
            _ => raw(&mut inp, op),
        };
        total += p.len();
        let i = pkts.len();
        if packet::parse(&p).is_ok() {
            let at = Span {
                buf: i as u32,
                start: 0,
                len: p.len() as u32,
            };
            c.push(&p, at, &mut emit);
            pushed.push(i);
        }
        pkts.push(p);
    }
    c.flush(&mut emit);
    assert!(c.is_empty(), "flows held after flush");

    // Delivered exactly once; which write delivered each.
    let mut by = vec![None; pkts.len()];
    for (wi, w) in outs.iter().enumerate() {
        assert!(w.parts.len() <= MAX_SEGMENTS, "{} parts", w.parts.len());
        let mut bytes = w.head.clone();
        for s in &w.parts {
            let p = pkts.get(s.buf as usize).expect("span in a buffer");
            let (a, b) = (s.start as usize, s.start as usize + s.len as usize);
            assert!(b <= p.len(), "span {s:?} outside its packet");
            bytes.extend_from_slice(&p[a..b]);
            let seen = by[s.buf as usize].replace(wi);
            assert!(seen.is_none(), "packet {} delivered twice", s.buf);
        }
        assert!(bytes.len() <= 65535, "a write of {} bytes", bytes.len());
        let mut framed = w.vnet.encode().to_vec();
        framed.extend_from_slice(&bytes);
        assert_eq!(VnetHdr::decode(&framed), Some(w.vnet));
        if w.head.is_empty() {
            let i = check_single(w, &pkts);
            assert_eq!(&framed[vnet::LEN..], &pkts[i][..], "single write altered");
        } else {
            check_coalesced(w, &pkts, &framed[vnet::LEN..]);
        }
    }
    for &i in &pushed {
        assert!(by[i].is_some(), "packet {i} never delivered");
    }
    for (i, b) in by.iter().enumerate() {
        assert!(
            b.is_none() || pushed.contains(&i),
            "packet {i} was never pushed"
        );
    }

    // Per flow, in the order pushed.
    let order: Vec<Order> = pushed.iter().map(|&i| order_of(&pkts[i])).collect();
    for (x, &i) in pushed.iter().enumerate() {
        for (y, &j) in pushed.iter().enumerate().skip(x + 1) {
            if related(order[x], order[y]) {
                assert!(by[i] <= by[j], "packets {i} and {j} of one flow reordered");
            }
        }
    }
});
