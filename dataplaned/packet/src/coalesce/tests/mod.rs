//! The coalescer against a reference written the plain way (a Vec of held
//! flows, packets re-parsed with `packet`, headers rebuilt byte by byte), and
//! against properties that hold whatever the rules: every packet delivered
//! once, per-flow order kept, merged writes that verify and resegment (as the
//! kernel does) into exactly the segments or datagrams received.
//!
//! This file is the harness; the TCP cases are in `tests/tcp.rs`,
//! the UDP ones in `tests/udp.rs`.

use super::*;
use crate::csum::tests::Rng;
use crate::packet;
use crate::testing::{pseudo, tcp_packet, udp_packet, Tcp};
use std::collections::HashMap;

mod tcp;
mod udp;

const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// Recomputes the IPv4 header checksum after a test edits the header.
fn fix_ip(p: &mut [u8]) {
    let hl = usize::from(p[0] & 0x0f) * 4;
    p[10..12].fill(0);
    let c = packet::checksum(&p[..hl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The test's own reading of a packet, done the plain way.
struct Info {
    proto: u8,
    addrs: ([u8; 4], [u8; 4]),
    /// (addresses, ports, protocol) of TCP or UDP with readable ports.
    key: Option<[u8; 13]>,
    /// header length and payload length of a coalescible segment/datagram.
    seg: Option<(usize, usize)>,
}

fn flow_proto(proto: u8) -> bool {
    proto == 6 || proto == 17
}

fn info(p: &[u8]) -> Info {
    let ip = packet::parse(p).expect("test packets are valid IPv4");
    let (src, dst) = (ip.src.octets(), ip.dst.octets());
    let (hl, proto) = (ip.header_len, ip.protocol);
    let key = (flow_proto(proto) && !ip.is_non_first_fragment() && p.len() >= hl + 4).then(|| {
        [&src[..], &dst[..], &p[hl..hl + 4], &[proto]]
            .concat()
            .try_into()
            .unwrap()
    });
    // Not MF and not the reserved flag bit.
    let plain = key.is_some() && hl == 20 && p[6] & 0xa0 == 0;
    let verifies = || {
        packet::checksum(&[pseudo(src, dst, proto, p.len() - 20), p[20..].to_vec()].concat()) == 0
    };
    let seg = match proto {
        6 if plain && p.len() >= 40 => {
            let thl = usize::from(p[32] >> 4) * 4;
            let flags_ok = p[32] & 0x0f == 0 && (p[33] == ACK || p[33] == ACK | PSH);
            (thl >= 20 && 20 + thl < p.len() && flags_ok && verifies())
                .then(|| (20 + thl, p.len() - 20 - thl))
        }
        17 if plain && p.len() > 28 => {
            let udp_len = usize::from(u16::from_be_bytes([p[24], p[25]]));
            let checked = p[26..28] != [0, 0];
            (udp_len == p.len() - 20 && checked && verifies()).then(|| (28, p.len() - 28))
        }
        _ => None,
    };
    Info {
        proto,
        addrs: (src, dst),
        key,
        seg,
    }
}

fn seq_of(p: &[u8]) -> u32 {
    u32::from_be_bytes(p[24..28].try_into().unwrap())
}

/// A write as the test keeps it.
#[derive(Debug, Clone, PartialEq)]
struct Out {
    vnet: VnetHdr,
    head: Vec<u8>,
    parts: Vec<Span>,
    segments: usize,
}

/// Places packets in four buffers at odd offsets, pushes them all, flushes.
fn run(inputs: &[Vec<u8>], rng: &mut Rng) -> (Vec<Vec<u8>>, Vec<Span>, Vec<Out>) {
    run_with(Coalescer::new(), inputs, rng)
}

fn run_with(
    mut c: Coalescer,
    inputs: &[Vec<u8>],
    rng: &mut Rng,
) -> (Vec<Vec<u8>>, Vec<Span>, Vec<Out>) {
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); 4];
    let mut spans = Vec::new();
    for p in inputs {
        let b = rng.below(4);
        let pad = rng.below(4);
        bufs[b].extend(std::iter::repeat_n(0xee, pad));
        let start = bufs[b].len() as u32;
        bufs[b].extend_from_slice(p);
        spans.push(Span {
            buf: b as u32,
            start,
            len: p.len() as u32,
        });
    }
    let mut outs = Vec::new();
    let mut emit = |w: Write<'_>| {
        outs.push(Out {
            vnet: w.vnet,
            head: w.head.to_vec(),
            parts: w.parts.to_vec(),
            segments: w.segments,
        })
    };
    for at in &spans {
        let pkt = &bufs[at.buf as usize][at.start as usize..(at.start + at.len) as usize];
        c.push(pkt, *at, &mut emit);
    }
    c.flush(&mut emit);
    assert!(c.is_empty());
    (bufs, spans, outs)
}

/// head + parts, the bytes after the vnet header.
fn bytes(o: &Out, bufs: &[Vec<u8>]) -> Vec<u8> {
    let mut v = o.head.clone();
    for p in &o.parts {
        v.extend_from_slice(&bufs[p.buf as usize][p.start as usize..(p.start + p.len) as usize]);
    }
    v
}

/// The bytes of a merged write of `pkts` (indexes into `inputs`), rebuilt.
fn merged(inputs: &[Vec<u8>], pkts: &[usize]) -> (VnetHdr, Vec<u8>, usize) {
    let first = &inputs[pkts[0]];
    if pkts.len() == 1 {
        return (VnetHdr::default(), first.clone(), 1);
    }
    let (hl, gso) = info(first).seg.unwrap();
    let tcp = first[9] == 6;
    let last = &inputs[*pkts.last().unwrap()];
    let mut head = first[..hl].to_vec();
    let payload: usize = pkts.iter().map(|&i| inputs[i].len() - hl).sum();
    head[2..4].copy_from_slice(&((hl + payload) as u16).to_be_bytes());
    fix_ip(&mut head);
    let (gso_type, csum) = if tcp {
        head[33] |= last[33] & PSH;
        head[34..36].copy_from_slice(&last[34..36]);
        (1, 36)
    } else {
        head[24..26].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
        (5, 26)
    };
    let partial = !packet::checksum(&pseudo(
        head[12..16].try_into().unwrap(),
        head[16..20].try_into().unwrap(),
        first[9],
        hl - 20 + payload,
    ));
    head[csum..csum + 2].copy_from_slice(&partial.to_be_bytes());
    for &i in pkts {
        head.extend_from_slice(&inputs[i][hl..]);
    }
    let vnet = VnetHdr {
        flags: 1,
        gso_type,
        hdr_len: hl as u16,
        gso_size: gso as u16,
        csum_start: 20,
        csum_offset: (csum - 20) as u16,
    };
    (vnet, head, pkts.len())
}

/// The rules, plainly: held flows in a Vec, oldest first; writes as bytes.
fn reference(inputs: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>, usize)> {
    let mut held: Vec<([u8; 13], Vec<usize>)> = Vec::new();
    let mut out = Vec::new();
    let write = |pkts: &[usize], out: &mut Vec<_>| out.push(merged(inputs, pkts));
    for (i, p) in inputs.iter().enumerate() {
        let inf = info(p);
        if flow_proto(inf.proto) && inf.key.is_none() {
            let addrs = [&inf.addrs.0[..], &inf.addrs.1[..]].concat();
            let (mine, rest): (Vec<_>, Vec<_>) = held
                .drain(..)
                .partition(|(k, _)| k[..8] == addrs[..] && k[12] == inf.proto);
            mine.iter().for_each(|(_, f)| write(f, &mut out));
            held = rest;
        }
        let Some(key) = inf.key else {
            write(&[i], &mut out);
            continue;
        };
        let at = held.iter().position(|(k, _)| *k == key);
        let Some((hl, len)) = inf.seg else {
            if let Some(at) = at {
                write(&held.remove(at).1, &mut out);
            }
            write(&[i], &mut out);
            continue;
        };
        let tcp = inf.proto == 6;
        let psh = tcp && p[33] & PSH != 0;
        if let Some(at) = at {
            let f = &mut held[at].1;
            let (first, last) = (&inputs[f[0]], &inputs[*f.last().unwrap()]);
            let (fhl, gso) = info(first).seg.unwrap();
            let sum: usize = f.iter().map(|&j| inputs[j].len() - fhl).sum();
            let stream = !tcp
                || (seq_of(p) == seq_of(last).wrapping_add((last.len() - fhl) as u32)
                    && p[28..32] == first[28..32]
                    && p[40..hl] == first[40..hl]);
            let fits = hl == fhl
                && stream
                && (p[1], p[8], p[6] & 0x40) == (first[1], first[8], first[6] & 0x40)
                && len <= gso
                && f.len() < MAX_SEGMENTS
                && hl + sum + len <= 65535;
            if fits {
                f.push(i);
                if psh || len < gso || f.len() == MAX_SEGMENTS || hl + sum + len + gso > 65535 {
                    write(&held.remove(at).1, &mut out);
                }
                continue;
            }
            write(&held.remove(at).1, &mut out);
        }
        if psh || hl + 2 * len > 65535 {
            write(&[i], &mut out);
            continue;
        }
        if held.len() == MAX_FLOWS {
            write(&held.remove(0).1, &mut out);
        }
        held.push((key, vec![i]));
    }
    held.iter().for_each(|(_, f)| write(f, &mut out));
    out
}

/// Properties every output must have, independent of the reference.
fn check(inputs: &[Vec<u8>], bufs: &[Vec<u8>], spans: &[Span], outs: &[Out]) {
    let by_end: HashMap<(u32, u32), usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.buf, s.start + s.len), i))
        .collect();
    let infos: Vec<Info> = inputs.iter().map(|p| info(p)).collect();
    let mut pos: Vec<Option<(usize, usize)>> = vec![None; inputs.len()];
    for (w, o) in outs.iter().enumerate() {
        let body = bytes(o, bufs);
        assert!(
            body.len() <= 65535 && o.segments <= MAX_SEGMENTS,
            "write {w} too big"
        );
        assert_eq!(o.segments, o.parts.len(), "write {w}");
        let ids: Vec<usize> = o
            .parts
            .iter()
            .map(|p| by_end[&(p.buf, p.start + p.len)])
            .collect();
        for (k, &i) in ids.iter().enumerate() {
            assert_eq!(pos[i], None, "input {i} delivered twice");
            pos[i] = Some((w, k));
        }
        if o.segments == 1 {
            assert_eq!(
                (o.vnet, o.head.len(), o.parts[0]),
                (VnetHdr::default(), 0, spans[ids[0]])
            );
            assert_eq!(body, inputs[ids[0]], "a packet written alone is unchanged");
            continue;
        }
        for &i in &ids {
            assert_eq!(infos[i].key, infos[ids[0]].key, "write {w}: one flow");
            assert!(infos[i].seg.is_some(), "write {w}: input {i} coalescible");
        }
        match o.vnet.gso_type {
            vnet::GSO_TCPV4 => tcp::check_merged(w, o, body, &ids, inputs, &infos),
            vnet::GSO_UDP_L4 => udp::check_merged(w, o, body, &ids, inputs),
            t => panic!("write {w}: gso type {t}"),
        }
    }
    assert!(pos.iter().all(Option::is_some), "every input delivered");
    for (i, inf) in infos.iter().enumerate() {
        if inf.seg.is_none() {
            assert_eq!(
                outs[pos[i].unwrap().0].segments,
                1,
                "input {i} must be alone"
            );
        }
    }
    // Order: same flow, or a TCP/UDP packet without ports and any packet of
    // its protocol between the same addresses.
    for j in 0..inputs.len() {
        for i in 0..j {
            let (a, b) = (&infos[i], &infos[j]);
            let related = (a.key.is_some() && a.key == b.key)
                || (flow_proto(a.proto)
                    && a.proto == b.proto
                    && a.addrs == b.addrs
                    && (a.key.is_none() || b.key.is_none()));
            assert!(!related || pos[i] < pos[j], "inputs {i} and {j} reordered");
        }
    }
}

/// Runs the coalescer on `inputs`, checks the properties and compares with
/// the reference; returns the writes with their bytes.
fn checked_writes(inputs: &[Vec<u8>], seed: u64) -> Vec<(Out, Vec<u8>)> {
    let (bufs, spans, outs) = run(inputs, &mut Rng(seed));
    check(inputs, &bufs, &spans, &outs);
    let got: Vec<_> = outs
        .iter()
        .map(|o| (o.vnet, bytes(o, &bufs), o.segments))
        .collect();
    let want = reference(inputs);
    assert_eq!(got.len(), want.len(), "number of writes");
    for (k, (g, r)) in got.iter().zip(&want).enumerate() {
        assert!(
            g == r,
            "write {k} differs from the reference: {:?} vs {:?}",
            (g.0, g.2),
            (r.0, r.2)
        );
    }
    outs.into_iter().zip(got).map(|(o, g)| (o, g.1)).collect()
}

fn full_check(inputs: &[Vec<u8>], seed: u64) -> Vec<Out> {
    checked_writes(inputs, seed)
        .into_iter()
        .map(|(o, _)| o)
        .collect()
}

fn segment_counts(outs: &[Out]) -> Vec<usize> {
    outs.iter().map(|o| o.segments).collect()
}

#[test]
fn truncated_or_garbled_packets_are_written_alone_without_panicking() {
    let mut rng = Rng(0xbad);
    let mut c = Coalescer::new();
    for len in 0..240 {
        let mut p = rng.bytes(len / 2);
        if p.len() > 9 {
            (p[0], p[9]) = (0x40 | rng.below(16) as u8, [6, 17][len % 2]);
        }
        let at = Span {
            buf: 1,
            start: 3,
            len: p.len() as u32,
        };
        let mut n = 0;
        c.push(&p, at, &mut |w| {
            assert_eq!((w.segments, w.parts, w.head.len()), (1, &[at][..], 0));
            n += 1;
        });
        assert_eq!(n, 1, "len {len}");
    }
    assert!(c.is_empty());
}
