//! Receive-side coalescing (kolach-packet's `coalesce`) on packet sequences built from the
//! input. Never a panic; every pushed packet is delivered exactly once, per
//! flow in the order pushed; a write carrying one packet is that packet's
//! bytes unchanged; a coalesced write carries packets of one flow, in the
//! order pushed, each with a verified checksum, no IP options, not a
//! fragment, the same TOS/TTL/DF, all but the last gso_size bytes of payload:
//! TCP: in-sequence ACK(/PSH) segments with the same ack and options; UDP
//! (only from `Coalescer::new()`, never `tcp_only()`): datagrams whose length
//! field is the IP payload. The write is a valid IPv4 packet whose completed
//! checksum verifies and which, cut again as the kernel would (TCP:
//! `segment`; UDP: datagrams of gso_size with fresh lengths and checksums),
//! gives back the packets received but for the IP id (and TCP window); no
//! write exceeds 65535 bytes or MAX_SEGMENTS parts.
//!
//! Input: ops that generate mostly valid TCP/UDP IPv4 packets of 32 flows, or
//! raw packets, or a flush; see coalesce_input.rs. Packets that fail
//! `packet::parse` are not pushed (the receive checks drop them before the
//! coalescer).
#![no_main]

mod coalesce_input;

use coalesce_input::{
    l4_checksum, l4_checksum_ok, Generator, Step, ACK, PROTO_TCP, PROTO_UDP, PSH,
};
use kolach_packet::coalesce::{Coalescer, Span, Write, MAX_SEGMENTS};
use kolach_packet::packet;
use kolach_packet::segment::{complete_checksum, Tso, MAX_HEADER_LEN};
use kolach_packet::vnet::{self, VnetHdr};
use libfuzzer_sys::fuzz_target;

/// A write, copied out of the coalescer.
struct Out {
    vnet: VnetHdr,
    head: Vec<u8>,
    parts: Vec<Span>,
    segments: usize,
}

/// How a pushed packet relates to others for ordering: TCP/UDP with readable
/// ports has a flow key (addresses, ports, protocol); a non-first fragment
/// only its addresses and protocol.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    None,
    Key([u8; 13]),
    Addrs([u8; 9]),
}

fn order_of(p: &[u8]) -> Order {
    let info = packet::parse(p).expect("pushed packets parse");
    if info.protocol != PROTO_TCP && info.protocol != PROTO_UDP {
        return Order::None;
    }
    let hl = info.header_len;
    if info.is_non_first_fragment() || p.len() < hl + 4 {
        let mut a = [0u8; 9];
        a[..8].copy_from_slice(&p[12..20]);
        a[8] = info.protocol;
        return Order::Addrs(a);
    }
    let mut k = [0u8; 13];
    k[..8].copy_from_slice(&p[12..20]);
    k[8..12].copy_from_slice(&p[hl..hl + 4]);
    k[12] = info.protocol;
    Order::Key(k)
}

fn related(a: Order, b: Order) -> bool {
    match (a, b) {
        (Order::None, _) | (_, Order::None) => false,
        (Order::Key(x), Order::Key(y)) => x == y,
        (Order::Key(x), Order::Addrs(y)) | (Order::Addrs(y), Order::Key(x)) => {
            x[..8] == y[..8] && x[12] == y[8]
        }
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

fn check_coalesced(w: &Out, pkts: &[Vec<u8>], bytes: &[u8], udp: bool) {
    let n = w.parts.len();
    assert!(n >= 2, "a header for {n} part(s)");
    assert_eq!(w.segments, n);
    let hl = w.head.len();
    let gso = usize::from(w.vnet.gso_size);
    let (proto, csum_offset) = match w.vnet.gso_type {
        vnet::GSO_TCPV4 => (PROTO_TCP, 16),
        vnet::GSO_UDP_L4 => {
            assert!(udp, "a UDP write from a tcp_only coalescer");
            assert_eq!(hl, 28, "UDP header length");
            (PROTO_UDP, 6)
        }
        t => panic!("gso_type {t}"),
    };
    assert_eq!(
        (w.vnet.flags, usize::from(w.vnet.hdr_len)),
        (vnet::F_NEEDS_CSUM, hl)
    );
    assert_eq!((w.vnet.csum_start, w.vnet.csum_offset), (20, csum_offset));
    assert!(hl <= MAX_HEADER_LEN);

    // The members: in push order, one flow, verified, no IP options, not
    // fragments, the same TOS/TTL/DF, gso_size payloads but the last.
    let first = &pkts[w.parts[0].buf as usize];
    for (k, s) in w.parts.iter().enumerate() {
        let p = &pkts[s.buf as usize];
        if k > 0 {
            assert!(s.buf > w.parts[k - 1].buf, "parts out of push order");
        }
        assert!(p.len() > hl, "a packet without payload joined");
        assert_eq!(p[0], 0x45, "a packet with IP options joined");
        assert_eq!(
            u16::from_be_bytes([p[6], p[7]]) & 0x3fff,
            0,
            "a fragment joined"
        );
        assert_eq!(p[9], proto, "protocols differ");
        assert_eq!(&p[12..24], &first[12..24], "another flow joined");
        assert!(l4_checksum_ok(p, 20), "a packet with a bad checksum joined");
        assert_eq!(
            (p[1], p[8], p[6] & 0x40),
            (first[1], first[8], first[6] & 0x40)
        );
        assert_eq!(
            (s.start as usize, s.len as usize),
            (hl, p.len() - hl),
            "payload span"
        );
        if k + 1 < n {
            assert_eq!(s.len as usize, gso, "part {k} is not gso_size");
        } else {
            assert!(s.len as usize <= gso, "last part longer than gso_size");
        }
    }

    // The packet the kernel gets: valid, and its completed checksum verifies.
    let mut merged = bytes.to_vec();
    let info = packet::parse(&merged).unwrap_or_else(|e| panic!("merged packet: {e}"));
    assert_eq!((info.header_len, info.protocol), (20, proto));
    assert_eq!(&merged[..hl], &w.head[..]);
    complete_checksum(&mut merged, 20, usize::from(csum_offset)).expect("checksum field in range");
    assert!(
        l4_checksum_ok(&merged, 20),
        "completed checksum does not verify"
    );
    if proto == PROTO_TCP {
        check_tcp(w, pkts, &merged);
    } else {
        check_udp(w, pkts, &merged);
    }
}

fn check_tcp(w: &Out, pkts: &[Vec<u8>], merged: &[u8]) {
    let (n, hl) = (w.parts.len(), w.head.len());
    let first = &pkts[w.parts[0].buf as usize];
    let mut seq = u32::from_be_bytes(first[24..28].try_into().unwrap());
    for (k, s) in w.parts.iter().enumerate() {
        let p = &pkts[s.buf as usize];
        let phl = 20 + usize::from(p[32] >> 4) * 4;
        assert_eq!(phl, hl, "header lengths differ");
        assert_eq!(&p[28..32], &first[28..32], "acks differ");
        assert_eq!(&p[40..phl], &first[40..hl], "TCP options differ");
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
        seq = seq.wrapping_add(s.len);
    }

    // Cut again as the kernel would: the segments received, but for IP id and
    // window (the merged header carries the last one's window).
    let tso = Tso::new(merged, w.vnet.gso_size).expect("a merged packet resegments");
    assert_eq!(tso.count(), n);
    for (k, s) in w.parts.iter().enumerate() {
        let p = &pkts[s.buf as usize];
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let r = tso.segment(merged, k, &mut hdr);
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

fn check_udp(w: &Out, pkts: &[Vec<u8>], merged: &[u8]) {
    let udp_len = u16::from_be_bytes([merged[24], merged[25]]);
    assert_eq!(usize::from(udp_len), merged.len() - 20, "merged UDP length");
    // Cut as the kernel does (__udp_gso_segment): datagrams of gso_size, each
    // with its own lengths and a fresh checksum: the datagrams received, but
    // for the IP id.
    let mut at = 28;
    for (k, s) in w.parts.iter().enumerate() {
        let p = &pkts[s.buf as usize];
        assert_eq!(
            usize::from(u16::from_be_bytes([p[24], p[25]])),
            p.len() - 20
        );
        assert_ne!(&p[26..28], &[0, 0], "a datagram without checksum joined");
        let len = s.len as usize;
        let mut d = merged[..28].to_vec();
        d.extend_from_slice(&merged[at..at + len]);
        at += len;
        d[2..4].copy_from_slice(&((28 + len) as u16).to_be_bytes());
        d[24..26].copy_from_slice(&((8 + len) as u16).to_be_bytes());
        d[26..28].fill(0);
        let c = l4_checksum(&d, 20);
        d[26..28].copy_from_slice(&c.to_be_bytes());
        assert_eq!(d.len(), p.len(), "datagram {k}: length");
        for b in (0..d.len()).filter(|b| !matches!(b, 4..=6 | 10 | 11)) {
            assert_eq!(d[b], p[b], "datagram {k}: byte {b}");
        }
        assert_eq!(d[6] & 0x7f, p[6] & 0x7f, "datagram {k}: DF/fragment bits");
    }
    assert_eq!(at, merged.len());
}

fuzz_target!(|data: &[u8]| {
    let mut steps = Generator::new(data);
    let udp = steps.udp;
    let mut pkts: Vec<Vec<u8>> = Vec::new();
    let mut pushed: Vec<usize> = Vec::new();
    let mut outs: Vec<Out> = Vec::new();
    let mut c = if udp {
        Coalescer::new()
    } else {
        Coalescer::tcp_only()
    };
    let mut emit = |w: Write<'_>| {
        outs.push(Out {
            vnet: w.vnet,
            head: w.head.to_vec(),
            parts: w.parts.to_vec(),
            segments: w.segments,
        })
    };
    while let Some(step) = steps.next_step() {
        let p = match step {
            Step::Packet(p) => p,
            Step::Flush => {
                c.flush(&mut emit);
                assert!(c.is_empty());
                continue;
            }
        };
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
            check_coalesced(w, &pkts, &framed[vnet::LEN..], udp);
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
