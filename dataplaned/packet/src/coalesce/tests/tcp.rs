//! TCP: random interleaved flows (TCP with every kind of disturbance, and
//! UDP flows on the same addresses and ports) against the reference, bulk
//! streams, caps, and what ends a held flow.

use super::*;
use std::net::Ipv4Addr;

/// A merged TCP write: completes its checksum like the kernel, then
/// resegments it.
pub(super) fn check_merged(
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
        packet::checksum(&[pseudo(src, dst, 6, body.len() - 20), body[20..].to_vec()].concat()),
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
        assert_eq!(infos[i].seg.map(|s| s.0), Some(hl), "write {w}: input {i}");
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
                p = crate::testing::build(t.src.into(), t.dst.into(), 64, 6, &[1, 1, 1, 1], &tcp);
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
    let mut prev = ([0; 4], [0; 4], [0; 2]);
    for f in 0..flows {
        if f % 3 == 2 {
            // UDP on the addresses and ports of the TCP flow before it.
            let (src, dst, ports) = prev;
            let size = [1, 7, 64, 100, 512, 1372, 1444, 8952, 33000][rng.below(9)];
            let n = 20 + rng.below(100);
            per_flow.push(udp::flow_datagrams(rng, src, dst, ports, size, n));
            continue;
        }
        // Some flows share addresses; one pair runs both ways.
        let a = [10, 50, 1, (f % 5) as u8];
        let b = [10, 50, 2, (f % 3) as u8];
        let (src, dst) = if f % 7 == 6 { (b, a) } else { (a, b) };
        let ports = [rng.next() as u16, 80 + (f % 2) as u16];
        prev = (src, dst, ports);
        let mut t = Tcp {
            src,
            dst,
            ports,
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
            0 => out.push(crate::testing::build(
                Ipv4Addr::new(10, 50, 1, 0),
                Ipv4Addr::new(10, 50, 2, 0),
                64,
                17,
                &[],
                &rng.bytes(30),
            )),
            1 => out.push(crate::testing::build(
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
        if flows >= 3 {
            assert!(
                outs.iter().any(|o| o.vnet.gso_type == vnet::GSO_UDP_L4),
                "round {round} coalesced no UDP"
            );
        }
    }
}

pub(super) fn bulk(n: usize, mss: usize, seq: u32) -> Vec<Vec<u8>> {
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
fn a_segment_with_the_reserved_ip_flag_is_written_alone() {
    // Linux GRO does not merge it either; it must reach the pod as sent.
    let mut pkts = bulk(9, 1000, 7);
    pkts[4][6] |= 0x80;
    fix_ip(&mut pkts[4]);
    let outs = full_check(&pkts, 8);
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
