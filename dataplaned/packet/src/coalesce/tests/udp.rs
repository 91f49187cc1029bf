//! UDP: datagram flows against the reference, kernel-style resegmentation of
//! `GSO_UDP_L4` writes back into the datagrams received, and what must be
//! written alone (no checksum, a bad one, IP options, fragments, lengths).

use super::*;
use crate::csum::Sum;

const SRC: [u8; 4] = [10, 50, 1, 2];
const DST: [u8; 4] = [10, 50, 7, 9];

/// One UDP flow's datagrams of `size` payload bytes, with every kind of
/// disturbance.
pub(super) fn flow_datagrams(
    rng: &mut Rng,
    src: [u8; 4],
    dst: [u8; 4],
    ports: [u16; 2],
    size: usize,
    n: usize,
) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let r = rng.below(100);
            let mut payload = rng.bytes(size);
            match r {
                0..=5 => payload.truncate(1 + rng.below(size)),
                6..=7 => {
                    let more = 1 + rng.below(300);
                    payload.extend(rng.bytes(more));
                }
                8 => payload.clear(),
                _ => {}
            }
            let mut p = udp_packet(src, dst, ports, &payload);
            match r {
                9 => p[26..28].fill(0), // no checksum
                10 => {
                    let at = 20 + rng.below(p.len() - 20);
                    p[at] ^= 1 << rng.below(8); // corrupted
                }
                11 => p[1] = 3,                 // ECN CE
                12 => p[8] = 63,                // another TTL
                13 => p[6] = 0,                 // DF clear
                14 => p[6] = 0x60,              // first fragment: DF|MF
                15 => (p[6], p[7]) = (0, 0xb9), // a later fragment
                16 => {
                    let udp = p[20..].to_vec();
                    p = crate::testing::build(src.into(), dst.into(), 64, 17, &[1, 1, 1, 1], &udp);
                }
                17 => {
                    // Padding after the datagram: UDP length < IP payload.
                    p.extend_from_slice(&[0, 0]);
                    let len = p.len() as u16;
                    p[2..4].copy_from_slice(&len.to_be_bytes());
                }
                18 => {
                    // A runt without a whole UDP header (or without ports).
                    p.truncate(20 + rng.below(8));
                    let len = p.len() as u16;
                    p[2..4].copy_from_slice(&len.to_be_bytes());
                }
                _ => {}
            }
            fix_ip(&mut p);
            p
        })
        .collect()
}

/// What the kernel makes of a `GSO_UDP_L4` write (`__udp_gso_segment`, then
/// the checksum completed as `skb_checksum_help` does): the payload cut by
/// gso_size, each datagram the write's header with its own lengths and IP
/// header checksum, the partial UDP checksum moved from the total length to
/// its own, then completed (a 0 sent as 0xffff). The kernel also numbers the
/// IP ids upward from the first; the coalescer does not look at them, and
/// these tests' datagrams all carry one id.
fn resegment(v: &VnetHdr, body: &[u8]) -> Vec<Vec<u8>> {
    let (hl, gso) = (usize::from(v.hdr_len), usize::from(v.gso_size));
    let total = u16::from_be_bytes([body[24], body[25]]);
    let partial = Sum(u16::from_be_bytes([body[26], body[27]]));
    body[hl..]
        .chunks(gso)
        .map(|chunk| {
            let len = (8 + chunk.len()) as u16;
            let mut d = [&body[..hl], chunk].concat();
            d[2..4].copy_from_slice(&(20 + len).to_be_bytes());
            fix_ip(&mut d);
            d[24..26].copy_from_slice(&len.to_be_bytes());
            let moved = partial.add_word(!total).add_word(len);
            d[26..28].copy_from_slice(&moved.0.to_be_bytes());
            let c = match packet::checksum(&d[20..]) {
                0 => 0xffff,
                c => c,
            };
            d[26..28].copy_from_slice(&c.to_be_bytes());
            d
        })
        .collect()
}

/// A merged UDP write: its vnet header, its own checksum once completed, and
/// the datagrams it resegments into, equal to the ones received (but for the
/// IP id).
pub(super) fn check_merged(w: usize, o: &Out, body: Vec<u8>, ids: &[usize], inputs: &[Vec<u8>]) {
    let gso = inputs[ids[0]].len() - 28;
    let want = VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: vnet::GSO_UDP_L4,
        hdr_len: 28,
        gso_size: gso as u16,
        csum_start: 20,
        csum_offset: 6,
    };
    assert_eq!(o.vnet, want, "write {w}");
    assert!(body.len() - 28 <= gso * 64, "write {w}: UDP_MAX_SEGMENTS");
    let ip = packet::parse(&body).unwrap_or_else(|e| panic!("write {w}: {e}"));
    let (src, dst) = (ip.src.octets(), ip.dst.octets());
    assert_eq!(
        usize::from(u16::from_be_bytes([body[24], body[25]])),
        body.len() - 20
    );
    let mut whole = body.clone();
    let c = packet::checksum(&whole[20..]);
    whole[26..28].copy_from_slice(&c.to_be_bytes());
    let sum =
        packet::checksum(&[pseudo(src, dst, 17, body.len() - 20), whole[20..].to_vec()].concat());
    assert_eq!(sum, 0, "write {w}: the completed checksum verifies");
    let dgrams = resegment(&o.vnet, &body);
    assert_eq!(
        dgrams.len(),
        ids.len(),
        "write {w}: gso_size splits into the datagrams received"
    );
    for (k, (&i, d)) in ids.iter().zip(&dgrams).enumerate() {
        let p = &inputs[i];
        packet::parse(d).unwrap_or_else(|e| panic!("write {w} datagram {k}: {e}"));
        assert_eq!(
            (&d[..4], &d[6..10], &d[12..]),
            (&p[..4], &p[6..10], &p[12..]),
            "write {w} datagram {k}"
        );
    }
}

fn stream(n: usize, size: usize, ports: [u16; 2], seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| udp_packet(SRC, DST, ports, &rng.bytes(size)))
        .collect()
}

#[test]
fn a_stream_of_100_small_datagrams_is_two_writes_that_resegment_into_them() {
    let inputs = stream(100, 64, [5353, 9000], 5);
    let writes = checked_writes(&inputs, 1);
    let counts: Vec<usize> = writes.iter().map(|(o, _)| o.segments).collect();
    assert_eq!(counts, [64, 36]);
    let mut again = Vec::new();
    for (o, body) in &writes {
        let n = o.segments;
        assert_eq!(
            o.vnet,
            VnetHdr {
                flags: vnet::F_NEEDS_CSUM,
                gso_type: vnet::GSO_UDP_L4,
                hdr_len: 28,
                gso_size: 64,
                csum_start: 20,
                csum_offset: 6,
            }
        );
        let be = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
        assert_eq!((be(2), be(24)), ((28 + 64 * n) as u16, (8 + 64 * n) as u16));
        assert_eq!(
            be(26),
            csum::pseudo_header(SRC, DST, 17, (8 + 64 * n) as u16).0
        );
        assert_eq!(packet::checksum(&body[..20]), 0, "IP header checksum");
        again.extend(resegment(&o.vnet, body));
    }
    assert_eq!(again, inputs, "byte for byte, checksums included");
}

#[test]
fn datagrams_without_or_with_a_bad_checksum_are_written_alone() {
    for damage in 0..3 {
        let mut pkts = stream(9, 200, [4000, 53], 6);
        match damage {
            0 => pkts[4][26..28].fill(0),
            1 => pkts[4][100] ^= 0x10,
            _ => pkts[4][27] ^= 0x01,
        }
        let writes = checked_writes(&pkts, 6 + damage);
        let counts: Vec<usize> = writes.iter().map(|(o, _)| o.segments).collect();
        assert_eq!(counts, [4, 1, 4], "damage {damage}");
        assert_eq!(writes[1].0.vnet, VnetHdr::default());
        assert_eq!(writes[1].1, pkts[4], "damage {damage}: unchanged");
    }
}

#[test]
fn a_datagram_whose_checksum_computes_to_zero_joins_and_keeps_0xffff() {
    let mut rng = Rng(8);
    let mut payload = rng.bytes(64);
    payload[62..64].fill(0);
    let p = udp_packet(SRC, DST, [7, 7], &payload);
    // Adding the complement of the sum makes the sum all ones: checksum 0.
    payload[62..64].copy_from_slice(&p[26..28]);
    let zero = udp_packet(SRC, DST, [7, 7], &payload);
    assert_eq!(zero[26..28], [0xff, 0xff]);
    let mut inputs = stream(3, 64, [7, 7], 9);
    inputs.insert(1, zero.clone());
    let writes = checked_writes(&inputs, 2);
    assert_eq!(writes.len(), 1);
    assert_eq!(resegment(&writes[0].0.vnet, &writes[0].1), inputs);
    // The same bytes sent without a checksum (0) verify as well, but the
    // merged write would give the datagram a checksum: alone.
    inputs[1][26..28].fill(0);
    assert_eq!(segment_counts(&full_check(&inputs, 3)), [1, 1, 2]);
}

#[test]
fn tcp_and_udp_flows_on_the_same_ports_do_not_mix() {
    let udp = stream(10, 500, [40000, 5201], 10);
    let mut t = Tcp {
        src: SRC,
        dst: DST,
        ports: [40000, 5201],
        seq: 1,
        ack: 1,
        flags: ACK,
        window: 9,
        opts: vec![],
        payload: vec![],
    };
    let mut inputs = Vec::new();
    for u in udp {
        t.payload = vec![t.seq as u8; 1000];
        inputs.push(tcp_packet(&t));
        t.seq += 1000;
        inputs.push(u);
    }
    let outs = full_check(&inputs, 11);
    let got: Vec<(u8, usize)> = outs.iter().map(|o| (o.vnet.gso_type, o.segments)).collect();
    assert_eq!(got, [(vnet::GSO_TCPV4, 10), (vnet::GSO_UDP_L4, 10)]);
}

#[test]
fn udp_with_ip_options_or_fragments_is_written_alone() {
    let mut t = Tcp {
        src: SRC,
        dst: DST,
        ports: [1, 2],
        seq: 1,
        ack: 1,
        flags: ACK,
        window: 9,
        opts: vec![],
        payload: vec![3; 700],
    };
    let mut tcp = || {
        let p = tcp_packet(&t);
        t.seq += 700;
        p
    };
    let u = stream(12, 300, [1, 2], 12);
    let mut opts =
        crate::testing::build(SRC.into(), DST.into(), 64, 17, &[1, 1, 1, 1], &u[4][20..]);
    fix_ip(&mut opts);
    let mut first_frag = u[7].clone();
    first_frag[6] |= 0x20;
    fix_ip(&mut first_frag);
    let mut later_frag = u[9].clone();
    (later_frag[6], later_frag[7]) = (0, 0xb9);
    fix_ip(&mut later_frag);
    let inputs = [
        tcp(),
        tcp(),
        u[0].clone(),
        u[1].clone(),
        opts,
        u[3].clone(),
        u[5].clone(),
        first_frag,
        u[6].clone(),
        later_frag, // ends every UDP flow between these addresses, no TCP one
        u[10].clone(),
        tcp(),
    ];
    let outs = full_check(&inputs, 12);
    let got: Vec<(u8, usize)> = outs.iter().map(|o| (o.vnet.gso_type, o.segments)).collect();
    let (tcp4, udp4) = (vnet::GSO_TCPV4, vnet::GSO_UDP_L4);
    assert_eq!(
        got,
        [
            (udp4, 2),
            (0, 1),
            (udp4, 2),
            (0, 1),
            (0, 1),
            (0, 1),
            (tcp4, 3),
            (0, 1)
        ]
    );
}

#[test]
fn a_longer_datagram_starts_a_new_write_and_a_shorter_one_ends_it() {
    let mut rng = Rng(13);
    let inputs: Vec<Vec<u8>> = [100, 100, 100, 200, 200, 50, 100, 100]
        .iter()
        .map(|&n| udp_packet(SRC, DST, [9, 9], &rng.bytes(n)))
        .collect();
    let outs = full_check(&inputs, 13);
    let got: Vec<(usize, u16)> = outs.iter().map(|o| (o.segments, o.vnet.gso_size)).collect();
    assert_eq!(got, [(3, 100), (3, 200), (2, 100)]);
}

#[test]
fn writes_stop_at_64_datagrams_and_at_64_kib() {
    let outs = full_check(&stream(200, 10, [1, 1], 14), 14);
    assert_eq!(segment_counts(&outs), [64, 64, 64, 8]);
    // (65535 - 28) / 1400 = 46 datagrams per write.
    let outs = full_check(&stream(100, 1400, [1, 1], 15), 15);
    assert_eq!(segment_counts(&outs), [46, 46, 8]);
    let outs = full_check(&stream(3, 32000, [1, 1], 16), 16);
    assert_eq!(segment_counts(&outs), [2, 1]);
    // Two would not fit in 64 KiB: each is written as it comes.
    let outs = full_check(&stream(3, 33000, [1, 1], 17), 17);
    assert_eq!(segment_counts(&outs), [1, 1, 1]);
}

#[test]
fn random_udp_flows_match_the_reference_and_keep_every_property() {
    let mut rng = Rng(0x5eed_0d90_0001);
    for (round, flows) in [1, 2, 5, 16, 17, 24].into_iter().enumerate() {
        let mut per_flow: Vec<std::vec::IntoIter<Vec<u8>>> = (0..flows)
            .map(|f| {
                let src = [10, 50, 1, (f % 3) as u8];
                let ports = [5000 + (f / 3) as u16, 53];
                let size = [1, 8, 64, 100, 1372, 1444, 8952][rng.below(7)];
                let n = 10 + rng.below(150);
                flow_datagrams(&mut rng, src, DST, ports, size, n).into_iter()
            })
            .collect();
        let mut inputs = Vec::new();
        while !per_flow.is_empty() {
            let f = rng.below(per_flow.len());
            let burst: Vec<_> = per_flow[f].by_ref().take(1 + rng.below(20)).collect();
            if burst.is_empty() {
                per_flow.remove(f);
            }
            inputs.extend(burst);
        }
        let outs = full_check(&inputs, 100 + round as u64);
        assert!(
            outs.iter().any(|o| o.segments > 1),
            "round {round} coalesced nothing"
        );
    }
}

#[test]
fn tcp_only_writes_every_datagram_alone() {
    let mut inputs = stream(10, 100, [1, 2], 18);
    inputs.extend(tcp::bulk(10, 1000, 1));
    let (bufs, _, outs) = run_with(Coalescer::tcp_only(), &inputs, &mut Rng(18));
    assert_eq!(segment_counts(&outs), [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 10]);
    for (o, p) in outs.iter().zip(&inputs[..10]) {
        assert_eq!(bytes(o, &bufs), *p);
    }
}
