//! IPv4 header checks and edits over plain byte slices.
//!
//! Everything here is pure and allocation-free so the packet loop can call it
//! per packet, and so it can be tested on hand-made packets.

use std::net::Ipv4Addr;

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

pub const PROTO_ICMP: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet is empty")]
    Empty,
    #[error("IP version {0}, expected 4")]
    NotIpv4(u8),
    #[error("packet of {0} bytes is shorter than an IPv4 header")]
    TooShort(usize),
    #[error("header length {0} is below 20 bytes")]
    BadHeaderLength(usize),
    #[error("total length {total} does not match the {len} bytes received")]
    LengthMismatch { total: usize, len: usize },
    #[error("header checksum does not verify")]
    BadChecksum,
}

/// The header fields the dataplane decides on. Offsets into the packet are
/// implied by `header_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Info {
    pub header_len: usize,
    pub total_len: usize,
    pub ttl: u8,
    pub protocol: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Fragment offset in 8-byte units; non-zero means a non-first fragment.
    pub fragment_offset: u16,
}

impl Ipv4Info {
    #[inline]
    pub fn is_non_first_fragment(&self) -> bool {
        self.fragment_offset != 0
    }
}

/// The IP version nibble, if there is a first byte at all.
#[inline]
pub fn version(pkt: &[u8]) -> Option<u8> {
    pkt.first().map(|b| b >> 4)
}

/// Parses and validates an IPv4 header: version, header length, total length
/// equal to the buffer (the UDP payload and a TUN read are exactly one packet),
/// and the header checksum.
#[inline]
pub fn parse(pkt: &[u8]) -> Result<Ipv4Info, PacketError> {
    let v = version(pkt).ok_or(PacketError::Empty)?;
    if v != 4 {
        return Err(PacketError::NotIpv4(v));
    }
    if pkt.len() < MIN_HEADER_LEN {
        return Err(PacketError::TooShort(pkt.len()));
    }
    let header_len = usize::from(pkt[0] & 0x0f) * 4;
    if header_len < MIN_HEADER_LEN {
        return Err(PacketError::BadHeaderLength(header_len));
    }
    let total_len = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if total_len != pkt.len() || header_len > total_len {
        return Err(PacketError::LengthMismatch {
            total: total_len,
            len: pkt.len(),
        });
    }
    if checksum(&pkt[..header_len]) != 0 {
        return Err(PacketError::BadChecksum);
    }
    Ok(Ipv4Info {
        header_len,
        total_len,
        ttl: pkt[8],
        protocol: pkt[9],
        src: Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]),
        dst: Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]),
        fragment_offset: u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff,
    })
}

/// The Internet checksum (RFC 1071) of `data`. Over a header whose checksum
/// field is filled in, a valid header sums to 0.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Decrements the TTL of a validated header and patches the header checksum
/// incrementally (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')), so the rest of the
/// header is never re-read. Returns the new TTL. The caller must have checked
/// the TTL is above 1.
#[inline]
pub fn decrement_ttl(pkt: &mut [u8]) -> u8 {
    let old_word = u16::from_be_bytes([pkt[8], pkt[9]]);
    pkt[8] = pkt[8].wrapping_sub(1);
    let new_word = u16::from_be_bytes([pkt[8], pkt[9]]);
    let hc = u16::from_be_bytes([pkt[10], pkt[11]]);
    let mut sum = u32::from(!hc) + u32::from(!old_word) + u32::from(new_word);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let hc_new = !(sum as u16);
    pkt[10..12].copy_from_slice(&hc_new.to_be_bytes());
    pkt[8]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::build;

    const A: Ipv4Addr = Ipv4Addr::new(10, 50, 18, 5);
    const B: Ipv4Addr = Ipv4Addr::new(10, 50, 7, 9);

    #[test]
    fn parses_plain_header() {
        let p = build(A, B, 64, 17, &[], b"hello");
        let i = parse(&p).unwrap();
        assert_eq!(i.header_len, 20);
        assert_eq!(i.total_len, 25);
        assert_eq!((i.src, i.dst, i.ttl, i.protocol), (A, B, 64, 17));
        assert!(!i.is_non_first_fragment());
    }

    #[test]
    fn parses_header_with_options() {
        // Record-route-ish option padding: 8 bytes of options, IHL 7.
        let p = build(A, B, 9, 6, &[1, 1, 1, 1, 0, 0, 0, 0], b"xy");
        let i = parse(&p).unwrap();
        assert_eq!(i.header_len, 28);
        assert_eq!(i.total_len, 30);
    }

    #[test]
    fn rejects_other_versions_and_garbage() {
        assert_eq!(parse(&[]), Err(PacketError::Empty));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        assert_eq!(parse(&v6), Err(PacketError::NotIpv4(6)));
        assert_eq!(parse(&[0x45, 0, 0]), Err(PacketError::TooShort(3)));
        let mut p = build(A, B, 64, 17, &[], b"x");
        p[0] = 0x44;
        assert_eq!(parse(&p), Err(PacketError::BadHeaderLength(16)));
    }

    #[test]
    fn rejects_truncated_and_padded() {
        let p = build(A, B, 64, 17, &[], b"hello");
        assert_eq!(
            parse(&p[..23]),
            Err(PacketError::LengthMismatch { total: 25, len: 23 })
        );
        let mut padded = p.clone();
        padded.push(0);
        assert!(matches!(
            parse(&padded),
            Err(PacketError::LengthMismatch { .. })
        ));
        // IHL pointing past the end of the packet.
        let mut q = build(A, B, 64, 17, &[], &[]);
        q[0] = 0x46;
        let c = checksum(&q[..20]);
        q[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(matches!(parse(&q), Err(PacketError::LengthMismatch { .. })));
    }

    #[test]
    fn rejects_bad_checksum() {
        let mut p = build(A, B, 64, 17, &[], b"hello");
        p[11] ^= 0x01;
        assert_eq!(parse(&p), Err(PacketError::BadChecksum));
    }

    #[test]
    fn fragment_offset_is_read() {
        let mut p = build(A, B, 64, 17, &[], b"hello");
        p[6] = 0x00;
        p[7] = 0x10; // offset 16 * 8
        p[10] = 0;
        p[11] = 0;
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(parse(&p).unwrap().is_non_first_fragment());
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        for ttl in [2u8, 64, 128, 255] {
            for opts in [&[][..], &[7, 7, 7, 7][..]] {
                let mut p = build(A, B, ttl, 1, opts, b"payload");
                assert_eq!(decrement_ttl(&mut p), ttl - 1);
                let i = parse(&p).expect("checksum still valid");
                assert_eq!(i.ttl, ttl - 1);
                // Equal to a full recomputation.
                let hl = i.header_len;
                let mut q = p.clone();
                q[10] = 0;
                q[11] = 0;
                let full = checksum(&q[..hl]);
                assert_eq!(u16::from_be_bytes([p[10], p[11]]), full);
            }
        }
    }

    #[test]
    fn ttl_decrement_over_many_checksum_values() {
        // Walk the identification field so the checksum takes many values,
        // including the ones where the incremental update must fold carries.
        for id in (0u16..=0xffff).step_by(97) {
            let mut p = build(A, B, 2, 17, &[], b"");
            p[4..6].copy_from_slice(&id.to_be_bytes());
            p[10] = 0;
            p[11] = 0;
            let c = checksum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            decrement_ttl(&mut p);
            assert!(parse(&p).is_ok(), "id {id:#x}");
        }
    }

    #[test]
    fn checksum_of_odd_length() {
        assert_eq!(checksum(&[0x01]), !0x0100);
        assert_eq!(checksum(&[]), 0xffff);
    }
}
