//! ICMP errors the udp backend answers with, built into a caller's buffer.
//!
//! The answer goes back into the TUN device, so the local kernel delivers it to
//! the sender as if a router on the overlay had said it. Source address: the TUN
//! address (this host's subnet .0).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::packet::{checksum, Ipv4Info, PROTO_ICMP};

/// ICMP destination unreachable, code 0: network unreachable.
pub const DEST_UNREACHABLE: (u8, u8) = (3, 0);
/// ICMP time exceeded, code 0: TTL exceeded in transit.
pub const TIME_EXCEEDED: (u8, u8) = (11, 0);

/// Buffer size that always holds an answer: IP + ICMP headers, the original
/// header with up to 40 bytes of options, and 8 bytes of its payload.
pub const MAX_ANSWER_LEN: usize = 20 + 8 + 60 + 8;

/// Whether a packet may be answered with an ICMP error (RFC 1812 4.3.2.7):
/// never for an ICMP error, a non-first fragment, a packet from outside the
/// overlay (`network` and this host's pool blocks, `local_blocks`), or one
/// sent to a multicast or broadcast address.
#[inline]
pub fn may_answer(pkt: &[u8], info: &Ipv4Info, network: Ipv4Net, local_blocks: &[Ipv4Net]) -> bool {
    if info.is_non_first_fragment() {
        return false;
    }
    if !network.contains(&info.src) && !local_blocks.iter().any(|b| b.contains(&info.src)) {
        return false;
    }
    if info.dst.is_multicast() || info.dst.is_broadcast() || info.dst == network.broadcast() {
        return false;
    }
    if info.protocol == PROTO_ICMP {
        // Only echo requests/replies and other queries may be answered; an
        // unreadable ICMP type is treated as an error message.
        return match pkt.get(info.header_len) {
            Some(&t) => !is_icmp_error(t),
            None => false,
        };
    }
    true
}

fn is_icmp_error(icmp_type: u8) -> bool {
    matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
}

/// Writes an ICMP error `(type, code)` about `pkt` into `out`, from `from` to
/// the packet's source. Returns the answer's length, or None when `out` is too
/// small. `pkt` must be the packet as received (before any TTL edit) and
/// `info` its parsed header.
pub fn build_error(
    out: &mut [u8],
    (icmp_type, code): (u8, u8),
    from: Ipv4Addr,
    pkt: &[u8],
    info: &Ipv4Info,
) -> Option<usize> {
    let quoted = (info.header_len + 8).min(info.total_len);
    let icmp_len = 8 + quoted;
    let total = 20 + icmp_len;
    if out.len() < total {
        return None;
    }
    let out = &mut out[..total];
    out.fill(0);
    out[0] = 0x45;
    // TOS 0xc0 (internetwork control), as the kernel uses for ICMP errors.
    out[1] = 0xc0;
    out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    out[8] = 64;
    out[9] = PROTO_ICMP;
    out[12..16].copy_from_slice(&from.octets());
    out[16..20].copy_from_slice(&info.src.octets());
    let ip_sum = checksum(&out[..20]);
    out[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    let icmp = &mut out[20..];
    icmp[0] = icmp_type;
    icmp[1] = code;
    icmp[8..].copy_from_slice(&pkt[..quoted]);
    let icmp_sum = checksum(icmp);
    icmp[2..4].copy_from_slice(&icmp_sum.to_be_bytes());
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::parse;
    use crate::testing::build;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 50, 18, 5);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 50, 99, 1);
    const TUN: Ipv4Addr = Ipv4Addr::new(10, 50, 18, 0);

    fn net() -> Ipv4Net {
        "10.50.0.0/16".parse().unwrap()
    }

    #[test]
    fn unreachable_has_right_fields_and_checksums() {
        let payload: Vec<u8> = (0u8..40).collect();
        let pkt = build(SRC, DST, 64, 17, &[], &payload);
        let info = parse(&pkt).unwrap();
        let mut out = [0u8; MAX_ANSWER_LEN];
        let n = build_error(&mut out, DEST_UNREACHABLE, TUN, &pkt, &info).unwrap();
        assert_eq!(n, 20 + 8 + 20 + 8);
        let ans = parse(&out[..n]).expect("valid IPv4 header");
        assert_eq!(ans.src, TUN);
        assert_eq!(ans.dst, SRC);
        assert_eq!(ans.protocol, PROTO_ICMP);
        assert_eq!(ans.ttl, 64);
        let icmp = &out[20..n];
        assert_eq!((icmp[0], icmp[1]), (3, 0));
        assert_eq!(checksum(icmp), 0, "ICMP checksum verifies");
        assert_eq!(&icmp[4..8], &[0, 0, 0, 0]);
        assert_eq!(&icmp[8..], &pkt[..28], "original header + 8 bytes");
    }

    #[test]
    fn time_exceeded_quotes_options_and_short_payload() {
        let pkt = build(SRC, DST, 1, 6, &[1, 1, 1, 0], b"abc");
        let info = parse(&pkt).unwrap();
        let mut out = [0u8; MAX_ANSWER_LEN];
        let n = build_error(&mut out, TIME_EXCEEDED, TUN, &pkt, &info).unwrap();
        assert_eq!(n, 20 + 8 + 24 + 3);
        assert!(parse(&out[..n]).is_ok());
        let icmp = &out[20..n];
        assert_eq!((icmp[0], icmp[1]), (11, 0));
        assert_eq!(checksum(icmp), 0);
        assert_eq!(&icmp[8..], &pkt[..]);
    }

    #[test]
    fn largest_answer_fits() {
        let pkt = build(SRC, DST, 1, 6, &[1; 40], &[9; 100]);
        let info = parse(&pkt).unwrap();
        let mut out = [0u8; MAX_ANSWER_LEN];
        assert_eq!(
            build_error(&mut out, TIME_EXCEEDED, TUN, &pkt, &info),
            Some(MAX_ANSWER_LEN)
        );
        let mut small = [0u8; 40];
        assert_eq!(
            build_error(&mut small, TIME_EXCEEDED, TUN, &pkt, &info),
            None
        );
    }

    #[test]
    fn never_answers_errors_fragments_or_outsiders() {
        let n = net();
        let udp = build(SRC, DST, 64, 17, &[], b"12345678");
        assert!(may_answer(&udp, &parse(&udp).unwrap(), n, &[]));

        let echo = build(SRC, DST, 64, 1, &[], &[8, 0, 0, 0, 0, 0, 0, 0]);
        assert!(may_answer(&echo, &parse(&echo).unwrap(), n, &[]));

        for t in [3u8, 11, 12, 4, 5] {
            let err = build(SRC, DST, 64, 1, &[], &[t, 0, 0, 0, 0, 0, 0, 0]);
            assert!(!may_answer(&err, &parse(&err).unwrap(), n, &[]), "type {t}");
        }
        let empty_icmp = build(SRC, DST, 64, 1, &[], &[]);
        assert!(!may_answer(
            &empty_icmp,
            &parse(&empty_icmp).unwrap(),
            n,
            &[]
        ));

        let outsider = build(Ipv4Addr::new(198, 18, 0, 1), DST, 64, 17, &[], b"x");
        assert!(!may_answer(&outsider, &parse(&outsider).unwrap(), n, &[]));
        // A pod in one of this host's pool blocks is one of ours.
        let pod = build(Ipv4Addr::new(203, 0, 113, 5), DST, 64, 17, &[], b"x");
        let blocks = ["203.0.113.0/28".parse().unwrap()];
        assert!(may_answer(&pod, &parse(&pod).unwrap(), n, &blocks));
        assert!(!may_answer(
            &outsider,
            &parse(&outsider).unwrap(),
            n,
            &blocks
        ));

        let bcast = build(SRC, Ipv4Addr::new(10, 50, 255, 255), 64, 17, &[], b"x");
        assert!(!may_answer(&bcast, &parse(&bcast).unwrap(), n, &[]));

        let mut frag = build(SRC, DST, 64, 17, &[], b"12345678");
        frag[6] = 0x20;
        frag[7] = 0x05;
        frag[10] = 0;
        frag[11] = 0;
        let c = checksum(&frag[..20]);
        frag[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(!may_answer(&frag, &parse(&frag).unwrap(), n, &[]));
    }
}
