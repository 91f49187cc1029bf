//! The `virtio_net_hdr` a TUN device opened with `IFF_VNET_HDR` puts before
//! every packet it reads and expects before every packet written to it: it
//! says whether the packet is a TCP segmentation (TSO/GSO) super-packet and
//! whether its transport checksum is left partial.
//!
//! The legacy header is in the host's byte order (no `TUNSETVNETLE`).

/// Bytes of `struct virtio_net_hdr`.
pub const LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset`
/// holds only the pseudo-header sum; the rest is still to be added.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified.
pub const F_DATA_VALID: u8 = 2;

pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
/// Set together with a TCP type when the segments carry ECN's CWR.
pub const GSO_ECN: u8 = 0x80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    /// Bytes of headers (IP + TCP) before the first segment's payload.
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS) of a GSO packet.
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header at the start of `b`, if there are enough bytes.
    #[inline]
    pub fn decode(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; LEN] = b.get(..LEN)?.try_into().ok()?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    #[inline]
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// The GSO type without the ECN bit.
    #[inline]
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !GSO_ECN
    }

    #[inline]
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_and_decode_are_inverse() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 52,
            gso_size: 1420,
            csum_start: 20,
            csum_offset: 16,
        };
        let b = h.encode();
        assert_eq!(VnetHdr::decode(&b), Some(h));
        assert_eq!(h.gso_kind(), GSO_TCPV4);
        assert!(h.needs_csum());
        assert_eq!(VnetHdr::decode(&b[..9]), None);
    }

    #[test]
    fn fields_are_in_host_order_at_their_offsets() {
        let h = VnetHdr {
            gso_size: 0x0102,
            ..Default::default()
        };
        let b = h.encode();
        assert_eq!(&b[4..6], &0x0102u16.to_ne_bytes());
        assert_eq!(VnetHdr::decode(&[0u8; LEN]), Some(VnetHdr::default()));
    }
}
