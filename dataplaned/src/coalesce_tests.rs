//! The coalescer against a reference written the plain way (a Vec of held
//! flows, packets re-parsed with `packet`, headers rebuilt byte by byte), and
//! against properties that hold whatever the rules: every packet delivered
//! once, per-flow order kept, merged writes that verify and resegment into
//! exactly the segments received.

use super::*;
use crate::csum::tests::Rng;
use crate::packet;
use std::collections::HashMap;
use std::net::Ipv4Addr;

const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// A TCP packet to build; `tcp_packet` fills both checksums.
#[derive(Clone)]
struct Tcp {
    src: [u8; 4],
    dst: [u8; 4],
    ports: [u16; 2],
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: Vec<u8>,
    payload: Vec<u8>,
}

fn tcp_packet(t: &Tcp) -> Vec<u8> {
    let thl = 20 + t.opts.len();
    let mut seg = vec![0u8; thl];
    seg[0..2].copy_from_slice(&t.ports[0].to_be_bytes());
    seg[2..4].copy_from_slice(&t.ports[1].to_be_bytes());
    seg[4..8].copy_from_slice(&t.seq.to_be_bytes());
    seg[8..12].copy_from_slice(&t.ack.to_be_bytes());
    seg[12] = ((thl / 4) as u8) << 4;
    seg[13] = t.flags;
    seg[14..16].copy_from_slice(&t.window.to_be_bytes());
    seg[20..].copy_from_slice(&t.opts);
    seg.extend_from_slice(&t.payload);
    let c = packet::checksum(&[pseudo(t.src, t.dst, seg.len()), seg.clone()].concat());
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    packet::tests::build(t.src.into(), t.dst.into(), 64, 6, &[], &seg)
}

fn pseudo(src: [u8; 4], dst: [u8; 4], tcp_len: usize) -> Vec<u8> {
    let len = (tcp_len as u16).to_be_bytes();
    [&src[..], &dst[..], &[0, 6], &len[..]].concat()
}

/// Recomputes the IPv4 header checksum after a test edits the header.
fn fix_ip(p: &mut [u8]) {
    let hl = usize::from(p[0] & 0x0f) * 4;
    p[10..12].fill(0);
    let c = packet::checksum(&p[..hl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The test's own reading of a packet, done the plain way.
struct Info {
    tcp: bool,
    addrs: ([u8; 4], [u8; 4]),
    /// (addresses, ports) when TCP ports are readable.
    key: Option<[u8; 12]>,
    /// header length and payload length of a coalescible segment.
    seg: Option<(usize, usize)>,
}

fn info(p: &[u8]) -> Info {
    let ip = packet::parse(p).expect("test packets are valid IPv4");
    let (src, dst) = (ip.src.octets(), ip.dst.octets());
    let hl = ip.header_len;
    let tcp = ip.protocol == 6;
    let key = (tcp && !ip.is_non_first_fragment() && p.len() >= hl + 4).then(|| {
        [&src[..], &dst[..], &p[hl..hl + 4]]
            .concat()
            .try_into()
            .unwrap()
    });
    let mut seg = None;
    if key.is_some() && hl == 20 && p[6] & 0x20 == 0 && p.len() >= 40 {
        let thl = usize::from(p[32] >> 4) * 4;
        let verifies =
            packet::checksum(&[pseudo(src, dst, p.len() - 20), p[20..].to_vec()].concat()) == 0;
        let flags_ok = p[32] & 0x0f == 0 && (p[33] == ACK || p[33] == ACK | PSH);
        if thl >= 20 && 20 + thl < p.len() && flags_ok && verifies {
            seg = Some((20 + thl, p.len() - 20 - thl));
        }
    }
    Info {
        tcp,
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
    let mut c = Coalescer::new();
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

/// The rules, plainly: held flows in a Vec, oldest first; writes as bytes.
fn reference(inputs: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>, usize)> {
    let mut held: Vec<([u8; 12], Vec<usize>)> = Vec::new();
    let mut out = Vec::new();
    let write = |pkts: &[usize], out: &mut Vec<_>| {
        let first = &inputs[pkts[0]];
        if pkts.len() == 1 {
            return out.push((VnetHdr::default(), first.clone(), 1));
        }
        let (hl, gso) = info(first).seg.unwrap();
        let last = &inputs[*pkts.last().unwrap()];
        let mut head = first[..hl].to_vec();
        let payload: usize = pkts.iter().map(|&i| inputs[i].len() - hl).sum();
        head[2..4].copy_from_slice(&((hl + payload) as u16).to_be_bytes());
        fix_ip(&mut head);
        head[33] |= last[33] & PSH;
        head[34..36].copy_from_slice(&last[34..36]);
        let partial = !packet::checksum(&pseudo(
            head[12..16].try_into().unwrap(),
            head[16..20].try_into().unwrap(),
            hl - 20 + payload,
        ));
        head[36..38].copy_from_slice(&partial.to_be_bytes());
        for &i in pkts {
            head.extend_from_slice(&inputs[i][hl..]);
        }
        let vnet = VnetHdr {
            flags: 1,
            gso_type: 1,
            hdr_len: hl as u16,
            gso_size: gso as u16,
            csum_start: 20,
            csum_offset: 16,
        };
        out.push((vnet, head, pkts.len()));
    };
    for (i, p) in inputs.iter().enumerate() {
        let inf = info(p);
        if inf.tcp && inf.key.is_none() {
            let (mine, rest): (Vec<_>, Vec<_>) = held
                .drain(..)
                .partition(|(k, _)| k[..8] == [&inf.addrs.0[..], &inf.addrs.1[..]].concat()[..]);
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
        let psh = p[33] & PSH != 0;
        if let Some(at) = at {
            let f = &mut held[at].1;
            let (first, last) = (&inputs[f[0]], &inputs[*f.last().unwrap()]);
            let (fhl, gso) = info(first).seg.unwrap();
            let sum: usize = f.iter().map(|&j| inputs[j].len() - fhl).sum();
            let fits = seq_of(p) == seq_of(last).wrapping_add((last.len() - fhl) as u32)
                && hl == fhl
                && p[28..32] == first[28..32]
                && p[40..hl] == first[40..hl]
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
        check_merged(w, o, body, &ids, inputs, &infos);
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
    // Order: same flow, or a TCP packet without ports and any TCP packet between the same addresses.
    for j in 0..inputs.len() {
        for i in 0..j {
            let (a, b) = (&infos[i], &infos[j]);
            let related = (a.key.is_some() && a.key == b.key)
                || (a.tcp && b.tcp && a.addrs == b.addrs && (a.key.is_none() || b.key.is_none()));
            assert!(!related || pos[i] < pos[j], "inputs {i} and {j} reordered");
        }
    }
}

/// A merged write: completes its checksum like the kernel, then resegments it.
fn check_merged(
    w: usize,
    o: &Out,
    mut body: Vec<u8>,
    ids: &[usize],
    inputs: &[Vec<u8>],
    infos: &[Info],
) {
    let v = o.vnet;
    let (cs, co) = (usize::from(v.csum_start), usize::from(v.csum_offset));
    assert_eq!(
        (v.flags, v.gso_type, cs, co),
        (vnet::F_NEEDS_CSUM, vnet::GSO_TCPV4, 20, 16)
    );
    let c = packet::checksum(&body[cs..]);
    body[cs + co..cs + co + 2].copy_from_slice(&c.to_be_bytes());
    let ip = packet::parse(&body).unwrap_or_else(|e| panic!("write {w}: {e}"));
    let (src, dst) = (ip.src.octets(), ip.dst.octets());
    assert_eq!(
        packet::checksum(&[pseudo(src, dst, body.len() - 20), body[20..].to_vec()].concat()),
        0
    );
    let hl = usize::from(v.hdr_len);
    let gso = usize::from(v.gso_size);
    let chunks: Vec<&[u8]> = body[hl..].chunks(gso).collect();
    assert_eq!(
        chunks.len(),
        ids.len(),
        "write {w}: gso_size splits into the segments received"
    );
    let first = &inputs[ids[0]];
    for (k, (&i, chunk)) in ids.iter().zip(&chunks).enumerate() {
        let p = &inputs[i];
        assert_eq!(
            infos[i].seg.map(|s| s.0),
            Some(hl),
            "write {w}: input {i} coalescible"
        );
        assert_eq!(infos[i].key, infos[ids[0]].key);
        assert_eq!(&p[hl..], *chunk, "write {w} segment {k} payload");
        assert_eq!(
            seq_of(p),
            seq_of(&body).wrapping_add((k * gso) as u32),
            "write {w} segment {k} seq"
        );
        assert_eq!(
            (&p[28..32], &p[40..hl]),
            (&body[28..32], &body[40..hl]),
            "ack and options"
        );
        assert_eq!(
            (p[1], p[8], p[6] & 0x40),
            (body[1], body[8], body[6] & 0x40)
        );
    }
    let last = &inputs[*ids.last().unwrap()];
    assert_eq!(body[33], ACK | (last[33] & PSH));
    assert_eq!(
        (&body[34..36], &body[..1], &body[4..6]),
        (&last[34..36], &first[..1], &first[4..6])
    );
}

fn full_check(inputs: &[Vec<u8>], seed: u64) -> Vec<Out> {
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
    outs
}

/// One flow's packets: SYN, then data with every kind of disturbance, then FIN.
fn flow_packets(rng: &mut Rng, t: &mut Tcp, mss: usize, ts: bool, n: usize) -> Vec<Vec<u8>> {
    let mut tsval = rng.next() as u32;
    let opts = |tsval: u32| {
        if ts {
            [&[1, 1, 8, 10][..], &tsval.to_be_bytes(), &[0, 0, 0, 7]].concat()
        } else {
            vec![]
        }
    };
    let mut out = Vec::new();
    t.opts = opts(tsval);
    out.push(tcp_packet(&Tcp {
        flags: 0x02,
        payload: vec![],
        ..t.clone()
    }));
    t.seq = t.seq.wrapping_add(1);
    for _ in 0..n {
        let mut s = Tcp {
            flags: ACK,
            payload: rng.bytes(mss),
            ..t.clone()
        };
        let r = rng.below(100);
        match r {
            0..=4 => s.payload.truncate(1 + rng.below(mss)),
            5..=9 => {
                s.flags |= PSH;
                s.payload.truncate(1 + rng.below(mss) * rng.below(2));
            }
            10..=12 => t.ack = t.ack.wrapping_add(1 + rng.below(9000) as u32),
            13..=15 => t.seq = t.seq.wrapping_add(1 + rng.below(3000) as u32),
            16..=18 if !out.is_empty() => out.push(out.last().unwrap().clone()),
            19..=23 => s.payload.clear(),
            24..=25 => t.window = rng.next() as u16,
            26..=27 => {
                tsval = tsval.wrapping_add(1);
                t.opts = opts(tsval);
            }
            28 => s.flags |= 0x20,      // URG
            29 => s.flags |= 0x40,      // ECE
            30 => s.flags |= 0x80,      // CWR
            31 => s.flags = 0x04 | ACK, // RST
            _ => {}
        }
        s.seq = t.seq;
        s.ack = t.ack;
        s.window = t.window;
        s.opts = t.opts.clone();
        let mut p = tcp_packet(&s);
        match r {
            32 => p[20 + s.opts.len() + 20] ^= 1 << rng.below(8), // corrupted payload
            33 => p[1] = 3,                                       // ECN CE
            34 => p[8] = 63,                                      // another TTL
            35 => p[6] = 0,                                       // DF clear
            36 => p[6] = 0x60,                                    // first fragment: DF|MF
            37 => (p[6], p[7]) = (0, 0xb9),                       // a later fragment
            38 => {
                // IP options: no longer a candidate.
                let tcp = p[20..].to_vec();
                p = packet::tests::build(t.src.into(), t.dst.into(), 64, 6, &[1, 1, 1, 1], &tcp);
            }
            _ => {}
        }
        fix_ip(&mut p);
        out.push(p);
        t.seq = t.seq.wrapping_add(s.payload.len() as u32);
    }
    let fin_len = rng.below(40);
    out.push(tcp_packet(&Tcp {
        flags: 0x01 | ACK,
        payload: rng.bytes(fin_len),
        ..t.clone()
    }));
    out
}

fn random_batch(rng: &mut Rng, flows: usize) -> Vec<Vec<u8>> {
    let mut per_flow: Vec<Vec<Vec<u8>>> = Vec::new();
    for f in 0..flows {
        // Some flows share addresses; one pair runs both ways.
        let a = [10, 50, 1, (f % 5) as u8];
        let b = [10, 50, 2, (f % 3) as u8];
        let (src, dst) = if f % 7 == 6 { (b, a) } else { (a, b) };
        let mut t = Tcp {
            src,
            dst,
            ports: [rng.next() as u16, 80 + (f % 2) as u16],
            seq: rng.next() as u32,
            ack: rng.next() as u32,
            flags: ACK,
            window: 0xffff,
            opts: vec![],
            payload: vec![],
        };
        let mss = [536, 1380, 1420, 1448, 1460, 777, 8960][rng.below(7)];
        let n = 20 + rng.below(100);
        let ts = rng.below(2) == 0;
        per_flow.push(flow_packets(rng, &mut t, mss, ts, n));
    }
    let mut next = vec![0usize; flows];
    let mut out = Vec::new();
    loop {
        let open: Vec<usize> = (0..flows)
            .filter(|&f| next[f] < per_flow[f].len())
            .collect();
        if open.is_empty() {
            return out;
        }
        // Bursts of one flow, as a GRO'd UDP read delivers them.
        let f = open[rng.below(open.len())];
        for _ in 0..1 + rng.below(12) {
            if let Some(p) = per_flow[f].get(next[f]) {
                out.push(p.clone());
                next[f] += 1;
            }
        }
        match rng.below(10) {
            0 => out.push(packet::tests::build(
                Ipv4Addr::new(10, 50, 1, 0),
                Ipv4Addr::new(10, 50, 2, 0),
                64,
                17,
                &[],
                &rng.bytes(30),
            )),
            1 => out.push(packet::tests::build(
                Ipv4Addr::new(10, 50, 1, 1),
                Ipv4Addr::new(10, 50, 2, 1),
                64,
                1,
                &[],
                &rng.bytes(9),
            )),
            _ => {}
        }
    }
}

#[test]
fn random_interleaved_flows_match_the_reference_and_keep_every_property() {
    let mut rng = Rng(0x5eed_c0a1_e5ce_0001);
    for round in 0..12 {
        let flows = [1, 3, 16, 17, 24][round % 5];
        let inputs = random_batch(&mut rng, flows);
        let outs = full_check(&inputs, 77 + round as u64);
        assert!(
            outs.iter().any(|o| o.segments > 1),
            "round {round} coalesced nothing"
        );
    }
}

fn bulk(n: usize, mss: usize, seq: u32) -> Vec<Vec<u8>> {
    let mut rng = Rng(99);
    let mut t = Tcp {
        src: [10, 50, 1, 2],
        dst: [10, 50, 7, 9],
        ports: [40000, 5201],
        seq,
        ack: 1,
        flags: ACK,
        window: 501,
        opts: vec![1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 2, 0],
        payload: vec![],
    };
    (0..n)
        .map(|_| {
            t.payload = rng.bytes(mss);
            let p = tcp_packet(&t);
            t.seq = t.seq.wrapping_add(mss as u32);
            p
        })
        .collect()
}

#[test]
fn a_bulk_stream_of_44_full_segments_is_one_write() {
    let outs = full_check(&bulk(44, 1448, 1000), 1);
    assert_eq!(outs.len(), 1);
    assert_eq!(
        (
            outs[0].segments,
            outs[0].vnet.gso_size,
            outs[0].vnet.hdr_len
        ),
        (44, 1448, 52)
    );
}

#[test]
fn sequence_numbers_wrap_inside_a_write() {
    let outs = full_check(&bulk(10, 1000, u32::MAX - 4321), 2);
    assert_eq!(outs.len(), 1);
}

#[test]
fn writes_stop_at_max_segments_and_at_64_kib() {
    let outs = full_check(&bulk(150, 100, 5), 3);
    assert_eq!(
        outs.iter().map(|o| o.segments).collect::<Vec<_>>(),
        [64, 64, 22]
    );
    let outs = full_check(&bulk(100, 1460, 5), 4);
    // (65535 - 52) / 1460 = 44 segments per write.
    assert_eq!(
        outs.iter().map(|o| o.segments).collect::<Vec<_>>(),
        [44, 44, 12]
    );
}

#[test]
fn a_held_flow_goes_out_before_a_packet_that_cannot_join_it() {
    let mut pkts = bulk(4, 1000, 7);
    let mut fin = pkts[3].clone();
    fin[33] |= 0x01;
    fix_ip(&mut fin);
    pkts[3] = fin; // bad TCP checksum now too: certainly alone
    let outs = full_check(&pkts, 5);
    assert_eq!(outs.iter().map(|o| o.segments).collect::<Vec<_>>(), [3, 1]);
}

#[test]
fn a_corrupted_segment_is_written_alone_between_two_writes() {
    let mut pkts = bulk(9, 1000, 7);
    pkts[4][500] ^= 0x80;
    let outs = full_check(&pkts, 6);
    assert_eq!(
        outs.iter().map(|o| o.segments).collect::<Vec<_>>(),
        [4, 1, 4]
    );
}

#[test]
fn a_full_table_pushes_out_its_oldest_flow() {
    let mut c = Coalescer::new();
    let mut emitted = Vec::new();
    let mut spans = Vec::new();
    for f in 0..=MAX_FLOWS {
        let t = Tcp {
            src: [10, 50, 1, 2],
            dst: [10, 50, 7, 9],
            ports: [1000 + f as u16, 80],
            seq: 1,
            ack: 1,
            flags: ACK,
            window: 9,
            opts: vec![],
            payload: vec![7; 100],
        };
        let p = tcp_packet(&t);
        let at = Span {
            buf: 0,
            start: f as u32 * 1000,
            len: p.len() as u32,
        };
        spans.push(at);
        c.push(&p, at, &mut |w| emitted.push(w.parts[0]));
        assert_eq!(
            emitted.len(),
            f.saturating_sub(MAX_FLOWS - 1),
            "after flow {f}"
        );
    }
    assert_eq!(emitted, [spans[0]]);
    c.flush(&mut |w| emitted.push(w.parts[0]));
    assert_eq!(emitted, spans, "the rest oldest first");
    assert!(c.is_empty());
}

#[test]
fn truncated_or_garbled_packets_are_written_alone_without_panicking() {
    let mut rng = Rng(0xbad);
    let mut c = Coalescer::new();
    for len in 0..120 {
        let mut p = rng.bytes(len);
        if len > 9 {
            (p[0], p[9]) = (0x40 | rng.below(16) as u8, 6);
        }
        let at = Span {
            buf: 1,
            start: 3,
            len: len as u32,
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
