//! The input of the coalesce target as a sequence of packets: a small
//! generator, so the fuzzer reaches the coalescing paths without having to
//! find checksums. The input is a list of ops, most of them one byte:
//! - a first byte 0xfe: the coalescer is `Coalescer::tcp_only()` (else
//!   `Coalescer::new()`, which coalesces UDP too);
//! - `0b00fffff`: the next packet of flow f (32 flows over 8 address pairs;
//!   flows 24-31 start as UDP, the others as TCP): a TCP segment in
//!   sequence or a UDP datagram, a full mss of payload, ACK, checksums right;
//! - `0b01fffff v [x]`: the same with choices from `v` (sequence: next,
//!   duplicate, gap, arbitrary; flags; payload length: mss, short, empty,
//!   longer) and, if `v & 0x80`, from `x` (corrupt a bit, new ack, new
//!   timestamp, TTL, TOS, DF, IP options, fragment bits), each taking more
//!   bytes where it needs a value; for UDP the flags RST mean checksum 0 and
//!   ACK|URG a UDP length one too long;
//! - `0b10fffff p`: flow f's mss, TCP options and (`p & 0x20`) UDP from `p`
//!   (the flow keeps its addresses and ports);
//! - `0xff`: flush (the end of a receive batch);
//! - `0b11xxxxx` (other): `len` (2 bytes, mod 2048) raw bytes; with `x & 1`
//!   the IPv4 version, total length and header checksum are fixed up.
//!
//! Checksums here are computed the plain way, independent of the code under
//! test; the target's checks use them too.

use std::sync::OnceLock;

use kolach_packet::packet;

pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
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
    udp: bool,
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
            udp: f >= 24,
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

/// The 12-byte IPv4 pseudo-header of a TCP/UDP packet of `len` bytes.
fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[0..4].copy_from_slice(src);
    p[4..8].copy_from_slice(dst);
    p[9] = proto;
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

/// The sum over the pseudo-header (protocol `pkt[9]`) + `pkt[ihl..]`, with
/// the checksum field as it is.
fn l4_sum(pkt: &[u8], ihl: usize) -> u16 {
    let ph = pseudo(&pkt[12..16], &pkt[16..20], pkt[9], pkt.len() - ihl);
    fold(sum16(&ph) + sum16(&pkt[ihl..]))
}

/// Whether the TCP/UDP checksum of `pkt` verifies.
pub fn l4_checksum_ok(pkt: &[u8], ihl: usize) -> bool {
    l4_sum(pkt, ihl) == 0xffff
}

/// The value for the TCP/UDP checksum field of `pkt`, whose field must be 0
/// (UDP: a computed 0 is sent as 0xffff).
pub fn l4_checksum(pkt: &[u8], ihl: usize) -> u16 {
    match !l4_sum(pkt, ihl) {
        0 if pkt[9] == PROTO_UDP => 0xffff,
        c => c,
    }
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

/// One generated TCP segment or UDP datagram of flow `f`.
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
    let opts = if flow.udp { vec![] } else { flow.options() };
    let ihl = 20 + ip_opts;
    let thl = if flow.udp { 8 } else { 20 + opts.len() };
    let len = ihl + thl + payload_len;
    let mut p = vec![0u8; len];
    p[0] = 0x40 | (ihl / 4) as u8;
    p[1] = tos;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[4..6].copy_from_slice(&(n as u16).to_be_bytes());
    p[6..8].copy_from_slice(&frag.to_be_bytes());
    p[8] = ttl;
    p[9] = if flow.udp { PROTO_UDP } else { PROTO_TCP };
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..ihl].fill(1); // NOP options
    let t = &mut p[ihl..];
    t[0..4].copy_from_slice(&ports);
    t[thl..].copy_from_slice(&pattern()[n % 256..][..payload_len]);
    if flow.udp {
        let udp_len = (thl + payload_len + usize::from(flags == ACK | 0x20)) as u16;
        t[4..6].copy_from_slice(&udp_len.to_be_bytes());
        if flags != 0x04 {
            let c = l4_checksum(&p, ihl);
            p[ihl + 6..ihl + 8].copy_from_slice(&c.to_be_bytes());
        }
    } else {
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&flow.ack.to_be_bytes());
        t[12] = ((thl / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&(n as u16 ^ 0x5a5a).to_be_bytes());
        t[20..thl].copy_from_slice(&opts);
        let c = l4_checksum(&p, ihl);
        p[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
    }
    fill_ip_checksum(&mut p, ihl);
    if let Some(at) = corrupt {
        // A flipped bit in the TCP/UDP header or payload: the IP header stays
        // valid.
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

/// What the next op asks for.
pub enum Step {
    /// A packet to push (if it parses).
    Packet(Vec<u8>),
    /// The end of a receive batch.
    Flush,
}

/// Turns the input into steps.
pub struct Generator<'a> {
    inp: Input<'a>,
    flows: Vec<Flow>,
    /// Packets generated so far (their index; also the IP id).
    n: usize,
    bytes: usize,
    /// Whether the coalescer coalesces UDP datagrams too.
    pub udp: bool,
}

impl<'a> Generator<'a> {
    pub fn new(data: &'a [u8]) -> Generator<'a> {
        let (udp, data) = match data.split_first() {
            Some((0xfe, rest)) => (false, rest),
            _ => (true, data),
        };
        Generator {
            inp: Input(data),
            flows: (0..32).map(Flow::new).collect(),
            n: 0,
            bytes: 0,
            udp,
        }
    }

    /// The next step, until the input, MAX_PACKETS or MAX_BYTES run out.
    pub fn next_step(&mut self) -> Option<Step> {
        loop {
            if self.inp.0.is_empty() || self.n >= MAX_PACKETS || self.bytes >= MAX_BYTES {
                return None;
            }
            let op = self.inp.byte();
            let p = match op >> 6 {
                0 | 1 => generate(&mut self.inp, op, &mut self.flows, self.n),
                2 => {
                    let f = &mut self.flows[usize::from(op & 0x1f)];
                    let x = self.inp.byte();
                    f.mss = MSS_TABLE[usize::from(x & 7)];
                    f.opts = (x >> 3) & 3;
                    f.udp = x & 0x20 != 0;
                    continue;
                }
                _ if op == 0xff => return Some(Step::Flush),
                _ => raw(&mut self.inp, op),
            };
            self.n += 1;
            self.bytes += p.len();
            return Some(Step::Packet(p));
        }
    }
}
