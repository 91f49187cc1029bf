//! Hand-built IPv4/UDP packets for the wire-format tests: what a flannel udp
//! peer puts in its datagrams, byte by byte, with correct checksums; and the
//! checks of captured inner packets (IPv4 header, TCP/UDP checksum).

use std::net::Ipv4Addr;

/// The Internet checksum (RFC 1071) of `data`, folded, not yet inverted.
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum to store for `data` (complement of the folded sum).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum16(data, 0))
}

/// An IPv4 packet carrying one UDP datagram.
#[derive(Clone, Debug)]
pub struct UdpPacket<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub ttl: u8,
    pub id: u16,
    pub payload: &'a [u8],
}

impl UdpPacket<'_> {
    /// Serializes header, UDP header and payload with both checksums set.
    pub fn build(&self) -> Vec<u8> {
        let udp_len = 8 + self.payload.len();
        let total = 20 + udp_len;
        let mut p = Vec::with_capacity(total);
        p.push(0x45); // version 4, IHL 5
        p.push(0);
        p.extend_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&0x4000u16.to_be_bytes()); // DF
        p.push(self.ttl);
        p.push(17);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.src.octets());
        p.extend_from_slice(&self.dst.octets());
        let hsum = checksum(&p[..20]);
        p[10..12].copy_from_slice(&hsum.to_be_bytes());

        p.extend_from_slice(&self.src_port.to_be_bytes());
        p.extend_from_slice(&self.dst_port.to_be_bytes());
        p.extend_from_slice(&(udp_len as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(self.payload);
        let mut pseudo = Vec::with_capacity(12);
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&self.dst.octets());
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
        let mut usum = !fold(sum16(&p[20..], sum16(&pseudo, 0)));
        if usum == 0 {
            usum = 0xffff; // 0 means "no checksum" in UDP over IPv4
        }
        p[26..28].copy_from_slice(&usum.to_be_bytes());
        p
    }
}

/// Whether an IPv4 header's checksum verifies.
pub fn ipv4_header_ok(p: &[u8]) -> bool {
    let ihl = usize::from(p.first().map_or(0, |b| b & 0x0f)) * 4;
    ihl >= 20 && p.len() >= ihl && fold(sum16(&p[..ihl], 0)) == 0xffff
}

/// Whether the TCP or UDP checksum of the IPv4 packet `p` verifies over the
/// pseudo-header and the whole segment (a UDP checksum of 0, "none", counts as
/// valid). None when `p` is not exactly one unfragmented IPv4 packet (its
/// total length must be `p.len()`) carrying TCP or UDP.
pub fn transport_checksum_ok(p: &[u8]) -> Option<bool> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let frag = u16::from_be_bytes([p[6], p[7]]) & 0x3fff;
    let proto = p[9];
    if ihl < 20 || total != p.len() || frag != 0 || !matches!(proto, 6 | 17) {
        return None;
    }
    let l4 = &p[ihl..];
    let (min, sum_at) = if proto == 6 { (20, 16) } else { (8, 6) };
    if l4.len() < min {
        return None;
    }
    if proto == 17 && l4[sum_at] == 0 && l4[sum_at + 1] == 0 {
        return Some(true);
    }
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&p[12..20]);
    pseudo[9] = proto;
    pseudo[10..].copy_from_slice(&(l4.len() as u16).to_be_bytes());
    Some(fold(sum16(l4, sum16(&pseudo, 0))) == 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(payload: &[u8]) -> Vec<u8> {
        UdpPacket {
            src: Ipv4Addr::new(10, 50, 7, 2),
            dst: Ipv4Addr::new(10, 50, 18, 2),
            src_port: 40000,
            dst_port: 5555,
            ttl: 64,
            id: 0x1234,
            payload,
        }
        .build()
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2 (before complement).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn header_and_lengths() {
        let p = sample(b"hello");
        assert_eq!(p.len(), 20 + 8 + 5);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 33);
        assert_eq!(p[8], 64);
        assert_eq!(p[9], 17);
        assert!(ipv4_header_ok(&p));
        assert_eq!(u16::from_be_bytes([p[24], p[25]]), 13);
        assert_eq!(&p[28..], b"hello");
    }

    #[test]
    fn udp_checksum_verifies_with_pseudo_header() {
        for payload in [&b"hello"[..], b"", b"odd", b"kolach wire format"] {
            let p = sample(payload);
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&p[12..20]);
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&p[24..26]);
            assert_eq!(fold(sum16(&p[20..], sum16(&pseudo, 0))), 0xffff);
        }
    }

    /// A TCP segment with its checksum computed the slow way: one big
    /// integer sum of 16-bit words, folded at the end.
    fn tcp_sample(payload: &[u8]) -> Vec<u8> {
        let total = 20 + 20 + payload.len();
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ];
        p.extend_from_slice(&[10, 50, 7, 2, 10, 50, 18, 2]);
        let h = checksum(&p[..20]);
        p[10..12].copy_from_slice(&h.to_be_bytes());
        p.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 7, 0, 0, 0, 9, 0x50, 0x18]);
        p.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(payload);
        let mut words: Vec<u8> = p[12..20].to_vec();
        words.extend_from_slice(&[0, 6]);
        words.extend_from_slice(&((total - 20) as u16).to_be_bytes());
        words.extend_from_slice(&p[20..]);
        if words.len() % 2 == 1 {
            words.push(0);
        }
        let mut big: u64 = words
            .chunks(2)
            .map(|w| u64::from(w[0]) << 8 | u64::from(w[1]))
            .sum();
        while big > 0xffff {
            big = (big & 0xffff) + (big >> 16);
        }
        p[36..38].copy_from_slice(&(!(big as u16)).to_be_bytes());
        p
    }

    #[test]
    fn transport_checksums_verify_and_catch_any_flipped_bit() {
        for payload in [&b""[..], b"a", b"even", b"odd length payload!"] {
            for p in [sample(payload), tcp_sample(payload)] {
                assert_eq!(transport_checksum_ok(&p), Some(true), "{p:02x?}");
                for i in 20..p.len() {
                    let mut bad = p.clone();
                    bad[i] ^= 0x10;
                    assert_eq!(transport_checksum_ok(&bad), Some(false), "byte {i}");
                }
                // The pseudo-header counts: another destination fails.
                let mut moved = p.clone();
                moved[19] ^= 1;
                assert_eq!(transport_checksum_ok(&moved), Some(false));
            }
        }
        let mut none = sample(b"no checksum");
        none[26..28].copy_from_slice(&[0, 0]);
        assert_eq!(transport_checksum_ok(&none), Some(true));
        let p = tcp_sample(b"xy");
        assert_eq!(transport_checksum_ok(&p[..p.len() - 1]), None);
        let mut frag = p.clone();
        frag[6] |= 0x20;
        assert_eq!(transport_checksum_ok(&frag), None);
        let mut icmp = p;
        icmp[9] = 1;
        assert_eq!(transport_checksum_ok(&icmp), None);
    }

    #[test]
    fn corrupted_header_fails() {
        let mut p = sample(b"x");
        p[8] ^= 1;
        assert!(!ipv4_header_ok(&p));
        assert!(!ipv4_header_ok(&[0x45, 0]));
    }
}
