use std::net::Ipv4Addr;

use super::*;
use crate::csum::tests::Rng;
use crate::packet;

const A: Ipv4Addr = Ipv4Addr::new(10, 50, 18, 5);
const B: Ipv4Addr = Ipv4Addr::new(10, 50, 7, 9);

const F_FIN: u8 = 0x01;
const F_PSH: u8 = 0x08;
const F_ACK: u8 = 0x10;
const F_URG: u8 = 0x20;
const F_ECE: u8 = 0x40;
const F_CWR: u8 = 0x80;

/// What a super-packet is made of; [`Spec::build`] turns it into bytes.
struct Spec {
    ip_options: Vec<u8>,
    tcp_options: Vec<u8>,
    id: u16,
    seq: u32,
    flags: u8,
    payload: Vec<u8>,
}

impl Spec {
    fn new(payload: Vec<u8>) -> Spec {
        Spec {
            ip_options: vec![],
            tcp_options: vec![],
            id: 0x1234,
            seq: 1000,
            flags: F_ACK,
            payload,
        }
    }

    /// A TCP/IPv4 packet whose TCP checksum field holds garbage (0xdead),
    /// as the partial value of a TUN read must be ignored anyway.
    fn build(&self) -> Vec<u8> {
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&self.seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&0x0bad_cafeu32.to_be_bytes());
        tcp[12] = (((20 + self.tcp_options.len()) / 4) as u8) << 4;
        tcp[13] = self.flags;
        tcp[14..16].copy_from_slice(&502u16.to_be_bytes());
        tcp[16..18].copy_from_slice(&0xdeadu16.to_be_bytes());
        tcp[18..20].copy_from_slice(&7u16.to_be_bytes()); // urgent pointer
        tcp.extend_from_slice(&self.tcp_options);
        tcp.extend_from_slice(&self.payload);
        let mut p = crate::testing::build(A, B, 63, 6, &self.ip_options, &tcp);
        p[4..6].copy_from_slice(&self.id.to_be_bytes());
        let hl = 20 + self.ip_options.len();
        csum::fill_ipv4_header(&mut p[..hl]);
        p
    }
}

/// The pseudo-header as bytes, for the slow checksum.
fn pseudo(src: &[u8], dst: &[u8], protocol: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    p.extend_from_slice(&[0, protocol]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

/// Segmentation written the obvious way: cut the payload, copy and patch
/// the headers, checksum everything with the slow RFC 1071 loop.
fn reference(pkt: &[u8], mss: usize) -> Vec<Vec<u8>> {
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let thl = usize::from(pkt[ihl + 12] >> 4) * 4;
    let payload = &pkt[ihl + thl..];
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[]]
    } else {
        payload.chunks(mss).collect()
    };
    let id = u16::from_be_bytes([pkt[4], pkt[5]]);
    let seq = u32::from_be_bytes(pkt[ihl + 4..ihl + 8].try_into().unwrap());
    let n = chunks.len();
    let mut out = Vec::new();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut ip = pkt[..ihl].to_vec();
        ip[2..4].copy_from_slice(&((ihl + thl + chunk.len()) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let c = packet::checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());

        let mut tcp = pkt[ihl..ihl + thl].to_vec();
        let s = (u64::from(seq) + (i * mss) as u64) as u32;
        tcp[4..8].copy_from_slice(&s.to_be_bytes());
        if i != n - 1 {
            tcp[13] &= !(F_FIN | F_PSH);
        }
        if i != 0 {
            tcp[13] &= !F_CWR;
        }
        tcp[16..18].copy_from_slice(&[0, 0]);
        let whole = [
            pseudo(&ip[12..16], &ip[16..20], 6, thl + chunk.len()),
            tcp.clone(),
            chunk.to_vec(),
        ]
        .concat();
        let c = packet::checksum(&whole);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        out.push([ip, tcp, chunk.to_vec()].concat());
    }
    out
}

/// Segments `pkt` with [`Tso`] and checks every segment against the
/// reference, that each parses and its TCP checksum verifies, and that the
/// payloads put back together are the original payload. Returns the
/// segments.
fn check(pkt: &[u8], mss: u16, what: &str) -> Vec<Vec<u8>> {
    let tso = Tso::new(pkt, mss).unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = reference(pkt, usize::from(mss));
    assert_eq!(tso.count(), want.len(), "{what}: count");
    let hl = tso.header_len();
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let mut payloads = Vec::new();
    let mut got_all = Vec::new();
    for (i, want) in want.iter().enumerate() {
        let range = tso.segment(pkt, i, &mut hdr);
        assert_eq!(
            range.len(),
            tso.payload_len(i),
            "{what}: segment {i} length"
        );
        let got = [&hdr[..hl], &pkt[range.clone()]].concat();
        assert!(
            got == *want,
            "{what}: segment {i} of {} differs",
            want.len()
        );
        let info = packet::parse(&got).unwrap_or_else(|e| panic!("{what}: segment {i}: {e}"));
        assert_eq!(info.protocol, 6);
        let ihl = info.header_len;
        let whole = [
            pseudo(&got[12..16], &got[16..20], 6, got.len() - ihl),
            got[ihl..].to_vec(),
        ];
        assert_eq!(
            packet::checksum(&whole.concat()),
            0,
            "{what}: segment {i} TCP checksum"
        );
        payloads.extend_from_slice(&pkt[range]);
        got_all.push(got);
    }
    assert!(payloads == pkt[hl..], "{what}: payloads put back together");
    got_all
}

fn random_options(rng: &mut Rng, max_words: usize) -> Vec<u8> {
    let words = rng.below(max_words + 1);
    rng.bytes(4 * words)
}

fn random_tcp_options(rng: &mut Rng) -> Vec<u8> {
    match rng.below(5) {
        0 => vec![],
        // NOP NOP timestamps, as Linux sends on every data segment.
        1 => [&[1, 1, 8, 10][..], &rng.bytes(8)].concat(),
        // MSS.
        2 => vec![2, 4, 0x05, 0xb4],
        // Timestamps + SACK-ish filler up to the 40-byte maximum.
        3 => [&[1, 1, 8, 10][..], &rng.bytes(8), &rng.bytes(28)].concat(),
        _ => random_options(rng, 10),
    }
}

fn random_mss(rng: &mut Rng) -> u16 {
    const SIZES: [u16; 10] = [1, 2, 3, 536, 1432, 1448, 1460, 8960, 65535, 0];
    match SIZES[rng.below(SIZES.len())] {
        0 => 1 + rng.below(9000) as u16,
        m => m,
    }
}

fn random_payload_len(rng: &mut Rng, mss: usize, max: usize) -> usize {
    let k = 1 + rng.below(5);
    let n = match rng.below(9) {
        0 => 0,
        1 => 1,
        2 => 2 * rng.below(max / 2) + 1,
        3 => k * mss,
        4 => k * mss + 1,
        5 => mss + 1,
        6 => mss.saturating_sub(1),
        7 => max,
        _ => rng.below(max + 1),
    };
    n.min(max)
}

#[test]
fn random_super_packets_match_the_reference() {
    let mut rng = Rng(0x5e9_7a11_0ff1_0ad5);
    // Which shapes the rounds hit: empty, one segment, several ending short,
    // several ending full, a 65535-byte packet, IHL 15, a 60-byte TCP header.
    let mut seen = [0usize; 7];
    for round in 0..400 {
        let ip_options = random_options(&mut rng, 10);
        let tcp_options = random_tcp_options(&mut rng);
        let mss = random_mss(&mut rng);
        let hl = 40 + ip_options.len() + tcp_options.len();
        // Keep one-byte segments from making tens of thousands of them.
        let max = if mss < 64 { 3000 } else { 65535 - hl };
        let len = random_payload_len(&mut rng, usize::from(mss), max);
        let spec = Spec {
            ip_options,
            tcp_options,
            id: [0xffff, 0xfffe, 0, rng.next() as u16][rng.below(4)],
            seq: [u32::MAX, u32::MAX - 100, rng.next() as u32][rng.below(3)],
            // URG is copied to every segment, as Linux does; any mix goes.
            flags: rng.next() as u8,
            payload: rng.bytes(len),
        };
        let pkt = spec.build();
        let segs = check(
            &pkt,
            mss,
            &format!("round {round} mss {mss} payload {len} headers {hl}"),
        );
        let m = usize::from(mss);
        seen[0] += usize::from(len == 0);
        seen[1] += usize::from(len > 0 && segs.len() == 1);
        seen[2] += usize::from(segs.len() > 1 && len % m != 0);
        seen[3] += usize::from(segs.len() > 1 && len % m == 0);
        seen[4] += usize::from(pkt.len() == 65535);
        seen[5] += usize::from(pkt[0] == 0x4f);
        seen[6] += usize::from(hl - 20 - spec.ip_options.len() == 60);
    }
    assert!(seen.iter().all(|&n| n > 0), "shapes seen: {seen:?}");
}

#[test]
fn a_payload_within_one_mss_is_one_segment_with_every_flag() {
    let mut rng = Rng(3);
    for len in [0, 1, 7, 1447, 1448] {
        let mut spec = Spec::new(rng.bytes(len));
        spec.flags = F_CWR | F_ECE | F_ACK | F_PSH | F_FIN;
        let pkt = spec.build();
        let segs = check(&pkt, 1448, &format!("payload {len}"));
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0][33], spec.flags, "flags kept");
        // Only the TCP checksum changes: the IP header was already right.
        assert_eq!(segs[0][..36], pkt[..36]);
        assert_eq!(segs[0][38..], pkt[38..]);
    }
}

#[test]
fn an_exact_multiple_of_mss_has_no_short_segment() {
    let pkt = Spec::new(Rng(5).bytes(3 * 1432)).build();
    let tso = Tso::new(&pkt, 1432).unwrap();
    assert_eq!(tso.count(), 3);
    assert_eq!(
        (0..3).map(|i| tso.payload_len(i)).collect::<Vec<_>>(),
        [1432; 3]
    );
    check(&pkt, 1432, "exact multiple");

    let pkt = Spec::new(Rng(5).bytes(3 * 1432 + 1)).build();
    let tso = Tso::new(&pkt, 1432).unwrap();
    assert_eq!(tso.count(), 4);
    assert_eq!(tso.payload_len(3), 1);
}

#[test]
fn fin_and_psh_go_to_the_last_segment_and_cwr_to_the_first() {
    let mut spec = Spec::new(Rng(9).bytes(2 * 536 + 100));
    spec.flags = F_CWR | F_ECE | F_URG | F_ACK | F_PSH | F_FIN;
    spec.tcp_options = [&[1, 1, 8, 10][..], &[9; 8]].concat();
    let segs = check(&spec.build(), 536, "flags");
    let flags: Vec<u8> = segs.iter().map(|s| s[33]).collect();
    assert_eq!(
        flags,
        [
            F_CWR | F_ECE | F_URG | F_ACK,
            F_ECE | F_URG | F_ACK,
            F_ECE | F_URG | F_ACK | F_PSH | F_FIN
        ]
    );
}

#[test]
fn ids_and_sequence_numbers_wrap() {
    let mut spec = Spec::new(Rng(13).bytes(3 * 1000));
    spec.id = 0xffff;
    spec.seq = u32::MAX - 999;
    let segs = check(&spec.build(), 1000, "wrap");
    let ids: Vec<u16> = segs
        .iter()
        .map(|s| u16::from_be_bytes([s[4], s[5]]))
        .collect();
    assert_eq!(ids, [0xffff, 0, 1]);
    let seqs: Vec<u32> = segs
        .iter()
        .map(|s| u32::from_be_bytes(s[24..28].try_into().unwrap()))
        .collect();
    assert_eq!(seqs, [u32::MAX - 999, 0, 1000]);
}

#[test]
fn the_largest_super_packet_with_the_largest_headers() {
    let mut rng = Rng(17);
    let mut spec = Spec::new(rng.bytes(65535 - MAX_HEADER_LEN));
    spec.ip_options = rng.bytes(40);
    spec.tcp_options = rng.bytes(40);
    let pkt = spec.build();
    assert_eq!(pkt.len(), 65535);
    let tso = Tso::new(&pkt, 1448).unwrap();
    assert_eq!(tso.header_len(), MAX_HEADER_LEN);
    check(&pkt, 1448, "largest");
    // One segment of it all is still a valid IPv4 packet.
    check(&pkt, 65535, "largest, one segment");
}

#[test]
fn a_segment_longer_than_an_ipv4_packet_is_refused() {
    // 65536 bytes: fine cut in 1448-byte segments, not as one.
    let mut pkt = Spec::new(Rng(19).bytes(65536 - 40)).build_unchecked_len();
    assert!(Tso::new(&pkt, 1448).is_ok());
    assert_eq!(
        Tso::new(&pkt, 65535).unwrap_err(),
        SegmentError::SegmentTooLong(65536)
    );
    pkt.pop();
    assert!(Tso::new(&pkt, 65535).is_ok());
}

impl Spec {
    /// Like `build`, for packets longer than an IPv4 total length can say
    /// (the field is then garbage, as [`Tso::new`] ignores it).
    fn build_unchecked_len(&self) -> Vec<u8> {
        let tail = self.payload.len().saturating_sub(1000);
        let short = Spec {
            payload: self.payload[..self.payload.len() - tail].to_vec(),
            ip_options: self.ip_options.clone(),
            tcp_options: self.tcp_options.clone(),
            ..*self
        };
        let mut p = short.build();
        p.extend_from_slice(&self.payload[self.payload.len() - tail..]);
        p
    }
}

#[test]
fn the_packet_itself_is_not_changed_and_garbage_around_hdr_stays() {
    let pkt = Spec::new(Rng(23).bytes(5000)).build();
    let before = pkt.clone();
    let tso = Tso::new(&pkt, 1448).unwrap();
    let mut hdr = [0xaau8; MAX_HEADER_LEN + 4];
    tso.segment(&pkt, 1, &mut hdr);
    assert_eq!(pkt, before);
    assert!(hdr[tso.header_len()..].iter().all(|&b| b == 0xaa));
}

#[test]
#[should_panic(expected = "segment 4 of 4")]
fn segment_past_the_count_panics() {
    let pkt = Spec::new(vec![0; 4000]).build();
    let tso = Tso::new(&pkt, 1000).unwrap();
    tso.segment(&pkt, 4, &mut [0; MAX_HEADER_LEN]);
}

#[test]
#[should_panic]
fn a_header_buffer_too_short_panics() {
    let pkt = Spec::new(vec![0; 4000]).build();
    let tso = Tso::new(&pkt, 1000).unwrap();
    tso.segment(&pkt, 0, &mut [0; 39]);
}

#[test]
fn new_refuses_what_is_not_a_tcp_ipv4_packet() {
    let good = Spec::new(vec![1, 2, 3]).build();
    assert!(Tso::new(&good, 1).is_ok());
    assert_eq!(Tso::new(&good, 0).unwrap_err(), SegmentError::ZeroMss);

    let udp = crate::testing::build(A, B, 64, 17, &[], &[0; 30]);
    assert_eq!(
        Tso::new(&udp, 1448).unwrap_err(),
        SegmentError::NotTcpV4 {
            version: 4,
            protocol: 17
        }
    );
    let mut v6 = good.clone();
    v6[0] = 0x65;
    assert!(matches!(
        Tso::new(&v6, 1448),
        Err(SegmentError::NotTcpV4 { version: 6, .. })
    ));

    assert_eq!(
        Tso::new(&[], 1448).unwrap_err(),
        SegmentError::Truncated { need: 20, len: 0 }
    );
    assert_eq!(
        Tso::new(&good[..19], 1448).unwrap_err(),
        SegmentError::Truncated { need: 20, len: 19 }
    );
    // IPv4 header only, TCP header cut short.
    assert_eq!(
        Tso::new(&good[..39], 1448).unwrap_err(),
        SegmentError::Truncated { need: 40, len: 39 }
    );
    // TCP options announced but missing.
    let mut spec = Spec::new(vec![]);
    spec.tcp_options = vec![1; 12];
    let opts = spec.build();
    assert_eq!(
        Tso::new(&opts[..50], 1448).unwrap_err(),
        SegmentError::Truncated { need: 52, len: 50 }
    );
    // IHL 15 in a 40-byte packet.
    let mut long_ihl = good[..40].to_vec();
    long_ihl[0] = 0x4f;
    assert_eq!(
        Tso::new(&long_ihl, 1448).unwrap_err(),
        SegmentError::Truncated { need: 80, len: 40 }
    );

    let mut ihl = good.clone();
    ihl[0] = 0x44;
    assert_eq!(
        Tso::new(&ihl, 1448).unwrap_err(),
        SegmentError::BadIpHeaderLength(16)
    );
    let mut doff = good.clone();
    doff[32] = 0x40;
    assert_eq!(
        Tso::new(&doff, 1448).unwrap_err(),
        SegmentError::BadTcpHeaderLength(16)
    );
}

#[test]
fn errors_name_the_problem() {
    let e = SegmentError::ChecksumOutOfRange {
        start: 20,
        offset: 16,
        len: 30,
    };
    assert_eq!(
        e.to_string(),
        "checksum field at 20 + 16 does not fit in a packet of 30 bytes"
    );
    let e = SegmentError::NotTcpV4 {
        version: 4,
        protocol: 17,
    };
    assert!(e.to_string().contains("protocol 17"));
}

/// An IPv4 packet of `protocol` whose transport checksum field (at
/// `csum_offset` into the transport header) holds the pseudo-header sum,
/// as the kernel leaves it with `NEEDS_CSUM`. The rest is random.
fn partial(rng: &mut Rng, protocol: u8, csum_offset: usize, l4_len: usize) -> (Vec<u8>, usize) {
    let options = random_options(rng, 10);
    let mut l4 = rng.bytes(l4_len);
    if protocol == 17 {
        l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    }
    let p = csum::pseudo_header(A.octets(), B.octets(), protocol, l4_len as u16);
    l4[csum_offset..csum_offset + 2].copy_from_slice(&p.0.to_be_bytes());
    let pkt = crate::testing::build(A, B, 64, protocol, &options, &l4);
    (pkt, 20 + options.len())
}

/// The full checksum the slow way, the field counted as zero.
fn full(pkt: &[u8], start: usize, field: usize) -> u16 {
    let mut l4 = pkt[start..].to_vec();
    l4[field - start..field - start + 2].copy_from_slice(&[0, 0]);
    packet::checksum(&[pseudo(&pkt[12..16], &pkt[16..20], pkt[9], l4.len()), l4].concat())
}

#[test]
fn complete_checksum_matches_the_reference_for_tcp_and_udp() {
    let mut rng = Rng(29);
    for round in 0..300 {
        let (protocol, off, min) = if rng.below(2) == 0 {
            (6, 16, 20)
        } else {
            (17, 6, 8)
        };
        let len = min + rng.below(3000);
        let (mut pkt, start) = partial(&mut rng, protocol, off, len);
        let want = full(&pkt, start, start + off);
        complete_checksum(&mut pkt, start, off).unwrap();
        let got = u16::from_be_bytes([pkt[start + off], pkt[start + off + 1]]);
        let want = if protocol == 17 && want == 0 {
            0xffff
        } else {
            want
        };
        assert_eq!(got, want, "round {round} protocol {protocol} len {len}");
        let whole = [
            pseudo(&pkt[12..16], &pkt[16..20], protocol, len),
            pkt[start..].to_vec(),
        ];
        assert_eq!(
            packet::checksum(&whole.concat()),
            0,
            "round {round}: verifies"
        );
        assert!(packet::parse(&pkt).is_ok());
    }
}

/// Makes the completed checksum come out 0 by choosing the last two bytes
/// of an even-length transport payload.
fn with_zero_checksum(protocol: u8, off: usize) -> (Vec<u8>, usize) {
    let mut rng = Rng(31);
    let (mut pkt, start) = partial(&mut rng, protocol, off, 100);
    let n = pkt.len();
    pkt[n - 2..].copy_from_slice(&[0, 0]);
    let s = Sum::of(&pkt[start..]);
    pkt[n - 2..].copy_from_slice(&(!s.0).to_be_bytes());
    (pkt, start)
}

#[test]
fn a_udp_checksum_of_zero_is_sent_as_all_ones() {
    let (mut pkt, start) = with_zero_checksum(17, 6);
    complete_checksum(&mut pkt, start, 6).unwrap();
    assert_eq!(pkt[start + 6..start + 8], [0xff, 0xff]);
    assert_eq!(
        full(&pkt, start, start + 6),
        0,
        "0 is the right value, 0xffff its twin"
    );

    let (mut pkt, start) = with_zero_checksum(6, 16);
    complete_checksum(&mut pkt, start, 16).unwrap();
    assert_eq!(pkt[start + 16..start + 18], [0, 0], "TCP keeps 0");
}

#[test]
fn complete_checksum_of_an_odd_length_and_an_odd_start() {
    let mut rng = Rng(37);
    for len in [21, 23, 1001] {
        let (mut pkt, start) = partial(&mut rng, 6, 16, len);
        complete_checksum(&mut pkt, start, 16).unwrap();
        assert_eq!(
            full(&pkt, start, start + 16),
            u16::from_be_bytes([pkt[start + 16], pkt[start + 17]])
        );
    }
    // Not a transport header at all: the rule is only "the complement of the
    // sum from start, the partial value counted"; with it the range sums to -0
    // once the partial value (the pseudo-header) is added back.
    let before = Rng(41).bytes(99);
    let mut raw = before.clone();
    complete_checksum(&mut raw, 3, 10).unwrap();
    let field = u16::from_be_bytes([raw[13], raw[14]]);
    assert_eq!(field, !Sum::of(&before[3..]).0);
    let partial = u16::from_be_bytes([before[13], before[14]]);
    assert_eq!(Sum::of(&raw[3..]).add_word(partial).0, 0xffff);
    assert_eq!(raw[..13], before[..13]);
    assert_eq!(raw[15..], before[15..]);
}

#[test]
fn complete_checksum_refuses_offsets_outside_the_packet() {
    let (pkt, start) = partial(&mut Rng(43), 6, 16, 20);
    let n = pkt.len();
    for (s, o) in [
        (n, 0),
        (n - 1, 0),
        (start, n - start - 1),
        (usize::MAX, 2),
        (2, usize::MAX),
        (usize::MAX - 1, 0),
    ] {
        let mut p = pkt.clone();
        assert_eq!(
            complete_checksum(&mut p, s, o),
            Err(SegmentError::ChecksumOutOfRange {
                start: s,
                offset: o,
                len: n
            }),
            "start {s} offset {o}"
        );
        assert_eq!(p, pkt, "unchanged");
    }
    let mut p = pkt.clone();
    assert!(
        complete_checksum(&mut p, n - 2, 0).is_ok(),
        "the last two bytes fit"
    );
    assert!(complete_checksum(&mut [], 0, 0).is_err());
}
