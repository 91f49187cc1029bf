//! TCP segmentation of a TUN super-packet (kolach-packet's `segment`) on arbitrary input:
//! the first 2 bytes are the MSS (big-endian), the rest is the packet. Never a
//! panic; whenever `Tso::new` accepts, the segments' payloads are in bounds,
//! contiguous and cover exactly the packet's payload (each but the last mss
//! bytes), every segment (headers from `segment` + its payload) is a valid
//! IPv4 packet with a verifying TCP checksum, the sequence numbers, IP ids and
//! flags are cut the way the module documents. `complete_checksum` never
//! panics for any offsets and, given a field that holds the pseudo-header sum
//! at the transport header's checksum offset, produces a checksum that
//! verifies.
#![no_main]

use kolach_packet::packet;
use kolach_packet::segment::{complete_checksum, Tso, MAX_HEADER_LEN};
use libfuzzer_sys::fuzz_target;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const CWR: u8 = 0x80;

/// The 12-byte IPv4 pseudo-header of a TCP/UDP segment of `len` bytes.
fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[0..4].copy_from_slice(src);
    p[4..8].copy_from_slice(dst);
    p[9] = proto;
    p[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

/// Whether the transport checksum of the IPv4 packet `pkt` (header length
/// `ihl`) verifies: pseudo-header + segment sums to 0.
fn transport_checksum_ok(pkt: &[u8], ihl: usize, proto: u8) -> bool {
    let seg = &pkt[ihl..];
    let mut all = pseudo(&pkt[12..16], &pkt[16..20], proto, seg.len()).to_vec();
    all.extend_from_slice(seg);
    packet::checksum(&all) == 0
}

fn check_segments(pkt: &[u8], mss: u16) {
    let Ok(tso) = Tso::new(pkt, mss) else {
        return;
    };
    let mss = usize::from(mss);
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let hl = tso.header_len();
    assert_eq!(hl, ihl + usize::from(pkt[ihl + 12] >> 4) * 4);
    assert!(hl <= MAX_HEADER_LEN && hl <= pkt.len());
    let payload = pkt.len() - hl;
    let count = tso.count();
    assert_eq!(count, payload.div_ceil(mss).max(1));

    let first_id = u16::from_be_bytes([pkt[4], pkt[5]]);
    let first_seq = u32::from_be_bytes([pkt[ihl + 4], pkt[ihl + 5], pkt[ihl + 6], pkt[ihl + 7]]);
    let flags = pkt[ihl + 13];
    let mut next = hl;
    let mut seg = Vec::with_capacity(MAX_HEADER_LEN + mss.min(payload));
    for i in 0..count {
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let r = tso.segment(pkt, i, &mut hdr);
        assert!(
            r.start <= r.end && r.end <= pkt.len(),
            "segment {i}: {r:?} out of bounds"
        );
        assert_eq!(r.start, next, "segment {i} not contiguous");
        next = r.end;
        let len = r.end - r.start;
        assert_eq!(len, tso.payload_len(i));
        if i + 1 < count {
            assert_eq!(len, mss, "segment {i} of {count} is not a full mss");
        } else {
            assert!(
                len <= mss && (len > 0 || payload == 0),
                "last segment of {len} bytes"
            );
        }

        seg.clear();
        seg.extend_from_slice(&hdr[..hl]);
        seg.extend_from_slice(&pkt[r.clone()]);
        let info = packet::parse(&seg).unwrap_or_else(|e| panic!("segment {i}: {e}"));
        assert_eq!(info.header_len, ihl);
        assert_eq!(info.protocol, PROTO_TCP);
        assert!(
            transport_checksum_ok(&seg, ihl, PROTO_TCP),
            "segment {i}: bad TCP checksum"
        );

        // What stays and what is cut, as documented.
        let id = u16::from_be_bytes([seg[4], seg[5]]);
        assert_eq!(id, first_id.wrapping_add(i as u16));
        let seq = u32::from_be_bytes([seg[ihl + 4], seg[ihl + 5], seg[ihl + 6], seg[ihl + 7]]);
        assert_eq!(seq, first_seq.wrapping_add((i * mss) as u32));
        let f = seg[ihl + 13];
        let mut want = flags;
        if i + 1 < count {
            want &= !(FIN | PSH);
        }
        if i > 0 {
            want &= !CWR;
        }
        assert_eq!(f, want, "segment {i}: flags");
        // Everything else in the headers is copied: IP bytes other than total
        // length, id and checksum; TCP bytes other than seq, flags, checksum.
        for b in (0..hl).filter(|&b| {
            !matches!(b, 2..=5 | 10 | 11)
                && !(ihl + 4..ihl + 8).contains(&b)
                && b != ihl + 13
                && b != ihl + 16
                && b != ihl + 17
        }) {
            assert_eq!(seg[b], pkt[b], "segment {i}: header byte {b} changed");
        }
    }
    assert_eq!(next, pkt.len(), "payload not covered");
}

/// The partial checksum a kernel leaves for `NEEDS_CSUM`: the pseudo-header
/// sum, folded, not complemented.
fn partial(pkt: &[u8], ihl: usize, proto: u8) -> u16 {
    !packet::checksum(&pseudo(&pkt[12..16], &pkt[16..20], proto, pkt.len() - ihl))
}

fn check_complete(data: &[u8], pkt: &[u8]) {
    // Offsets straight from the input, and ones that overflow: never a panic.
    let (a, b) = (usize::from(data[0]), usize::from(data[1]));
    for (start, offset) in [
        (a, b),
        (b, a),
        (usize::from(u16::from_be_bytes([data[0], data[1]])), 16),
        (usize::MAX - a, b),
        (a, usize::MAX - b),
    ] {
        let mut copy = pkt.to_vec();
        if complete_checksum(&mut copy, start, offset).is_ok() {
            assert!(start + offset + 2 <= copy.len());
            // Only the field may change.
            for (i, (x, y)) in copy.iter().zip(pkt).enumerate() {
                if i != start + offset && i != start + offset + 1 {
                    assert_eq!(x, y, "byte {i} outside the field changed");
                }
            }
        }
    }

    // A TCP (or UDP) packet whose field holds the pseudo-header sum, as the
    // kernel hands it over: completed, it verifies.
    if pkt.len() < 20 || pkt[0] >> 4 != 4 {
        return;
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let proto = pkt[9];
    let offset = match proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return,
    };
    if ihl < 20 || pkt.len() < ihl + offset + 2 || pkt.len() - ihl > usize::from(u16::MAX) {
        return;
    }
    let mut copy = pkt.to_vec();
    let p = partial(&copy, ihl, proto);
    copy[ihl + offset..ihl + offset + 2].copy_from_slice(&p.to_be_bytes());
    complete_checksum(&mut copy, ihl, offset).expect("the field is inside the packet");
    assert!(
        transport_checksum_ok(&copy, ihl, proto),
        "completed checksum does not verify"
    );
    if proto == PROTO_UDP {
        assert_ne!(&copy[ihl + 6..ihl + 8], &[0, 0], "UDP checksum 0 sent");
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let mss = u16::from_be_bytes([data[0], data[1]]);
    let pkt = &data[2..];
    check_segments(pkt, mss);
    check_complete(data, pkt);
});
