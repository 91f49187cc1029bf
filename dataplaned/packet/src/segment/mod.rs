//! TCP segmentation offload in userspace, and completion of partial
//! checksums, for packets read from a TUN opened with `IFF_VNET_HDR`.
//!
//! With TSO enabled the kernel hands the TUN one TCP/IPv4 super-packet of up
//! to 64 KiB instead of ~45 MTU-sized segments, and leaves its TCP checksum
//! partial: the field holds only the pseudo-header sum. flannel's wire format
//! carries exactly one inner IPv4 packet per UDP datagram, so before sending
//! the loop must cut the super-packet into segments a receiver's kernel would
//! accept as if the sender had sent them one by one — the same cut Linux's
//! `tcp_gso_segment` makes:
//!
//! - every segment gets a copy of the IPv4 and TCP headers (options
//!   included), its own IPv4 total length, identification (first + i) and
//!   header checksum, its own sequence number (first + i·mss) and a full TCP
//!   checksum;
//! - FIN and PSH stay only on the last segment, CWR only on the first; every
//!   other flag (URG and the urgent pointer too, as Linux does) is copied.
//!
//! [`Tso::segment`] writes a segment's headers into a buffer the caller owns
//! and returns where its payload lies in the super-packet, so the loop sends
//! `[headers, payload]` with an iovec and no payload byte is copied. Each
//! payload is summed once, eight bytes at a time ([`csum::Sum::of`]); the
//! header and pseudo-header sums are added to it. Nothing here allocates.
//!
//! A packet that is not a super-packet but has `NEEDS_CSUM` set only needs
//! its checksum finished: [`complete_checksum`].

use std::ops::Range;

use crate::csum::{self, Sum};

/// Bytes of the largest IPv4 + TCP header pair (60 + 60).
pub const MAX_HEADER_LEN: usize = 120;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const MIN_IP_HEADER_LEN: usize = 20;
const MIN_TCP_HEADER_LEN: usize = 20;
/// Offsets inside the TCP header.
const TCP_SEQ: usize = 4;
const TCP_FLAGS: usize = 13;
const TCP_CHECKSUM: usize = 16;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const CWR: u8 = 0x80;
/// Offset of the UDP checksum inside the UDP header.
const UDP_CHECKSUM: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("not a TCP/IPv4 packet (IP version {version}, protocol {protocol})")]
    NotTcpV4 { version: u8, protocol: u8 },
    #[error("packet of {len} bytes is shorter than its headers ({need} bytes)")]
    Truncated { need: usize, len: usize },
    #[error("IPv4 header length {0} is below 20 bytes")]
    BadIpHeaderLength(usize),
    #[error("TCP header length {0} is below 20 bytes")]
    BadTcpHeaderLength(usize),
    #[error("segment size (MSS) is 0")]
    ZeroMss,
    #[error("a segment of {0} bytes does not fit an IPv4 total length")]
    SegmentTooLong(usize),
    #[error("checksum field at {start} + {offset} does not fit in a packet of {len} bytes")]
    ChecksumOutOfRange {
        start: usize,
        offset: usize,
        len: usize,
    },
}

/// A TCP/IPv4 super-packet (read from a TUN with vnet gso_type GSO_TCPV4)
/// ready to be cut into segments of at most `mss` payload bytes. Holds only
/// offsets and values, borrows nothing: the caller passes the same packet
/// to [`Tso::segment`].
#[derive(Debug, Clone, Copy)]
pub struct Tso {
    ip_header_len: usize,
    header_len: usize,
    /// Bytes of the whole super-packet, as given to [`Tso::new`].
    packet_len: usize,
    mss: usize,
    count: usize,
    first_id: u16,
    first_seq: u32,
    src: [u8; 4],
    dst: [u8; 4],
}

impl Tso {
    /// `pkt` is the whole IPv4 packet (after the 10-byte vnet header).
    /// Validates: IPv4, protocol 6, IHL >= 5, TCP data offset >= 5, both
    /// headers inside `pkt`, `mss` > 0, and that the largest segment fits an
    /// IPv4 total length. The size is `pkt.len()`; the IPv4 total-length
    /// field is not consulted. The TTL is taken as it is.
    #[inline]
    pub fn new(pkt: &[u8], mss: u16) -> Result<Tso, SegmentError> {
        if mss == 0 {
            return Err(SegmentError::ZeroMss);
        }
        let len = pkt.len();
        if len < MIN_IP_HEADER_LEN {
            return Err(SegmentError::Truncated {
                need: MIN_IP_HEADER_LEN,
                len,
            });
        }
        let (version, protocol) = (pkt[0] >> 4, pkt[9]);
        if version != 4 || protocol != PROTO_TCP {
            return Err(SegmentError::NotTcpV4 { version, protocol });
        }
        let ip_header_len = usize::from(pkt[0] & 0x0f) * 4;
        if ip_header_len < MIN_IP_HEADER_LEN {
            return Err(SegmentError::BadIpHeaderLength(ip_header_len));
        }
        let need = ip_header_len + MIN_TCP_HEADER_LEN;
        if len < need {
            return Err(SegmentError::Truncated { need, len });
        }
        let tcp = &pkt[ip_header_len..];
        let tcp_header_len = usize::from(tcp[12] >> 4) * 4;
        if tcp_header_len < MIN_TCP_HEADER_LEN {
            return Err(SegmentError::BadTcpHeaderLength(tcp_header_len));
        }
        let header_len = ip_header_len + tcp_header_len;
        if len < header_len {
            return Err(SegmentError::Truncated {
                need: header_len,
                len,
            });
        }
        let mss = usize::from(mss);
        let payload = len - header_len;
        let largest = header_len + payload.min(mss);
        if largest > usize::from(u16::MAX) {
            return Err(SegmentError::SegmentTooLong(largest));
        }
        Ok(Tso {
            ip_header_len,
            header_len,
            packet_len: len,
            mss,
            count: payload.div_ceil(mss).max(1),
            first_id: u16::from_be_bytes([pkt[4], pkt[5]]),
            first_seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            src: [pkt[12], pkt[13], pkt[14], pkt[15]],
            dst: [pkt[16], pkt[17], pkt[18], pkt[19]],
        })
    }

    /// Number of segments: at least 1 (an empty payload, or one that fits
    /// in one mss, is a single segment).
    #[inline]
    pub fn count(&self) -> usize {
        self.count
    }

    /// IPv4 header + TCP header length, the same for every segment.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Payload bytes of segment `i`: mss for all but the last.
    ///
    /// # Panics
    /// If `i >= self.count()`.
    #[inline]
    pub fn payload_len(&self, i: usize) -> usize {
        assert!(i < self.count, "segment {i} of {}", self.count);
        if i + 1 < self.count {
            self.mss
        } else {
            self.packet_len - self.header_len - i * self.mss
        }
    }

    /// Writes segment `i`'s IPv4 + TCP headers into `hdr[..header_len()]`
    /// and returns the range of segment `i`'s payload inside `pkt`, which
    /// must be the packet given to [`Tso::new`] (its length is checked in
    /// debug builds). The TCP checksum field of `pkt` (partial or garbage) is
    /// ignored; `pkt` is not modified.
    ///
    /// # Panics
    /// If `i >= self.count()` or `hdr` is shorter than `header_len()`
    /// ([`MAX_HEADER_LEN`] is always enough).
    #[inline]
    pub fn segment(&self, pkt: &[u8], i: usize, hdr: &mut [u8]) -> Range<usize> {
        debug_assert_eq!(pkt.len(), self.packet_len, "not the packet of Tso::new");
        let payload_len = self.payload_len(i);
        let start = self.header_len + i * self.mss;
        let payload = start..start + payload_len;
        let hdr = &mut hdr[..self.header_len];
        hdr.copy_from_slice(&pkt[..self.header_len]);
        let (ip, tcp) = hdr.split_at_mut(self.ip_header_len);

        // Fits: Tso::new checked the largest segment against u16::MAX.
        let total = (self.header_len + payload_len) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        // Truncating i is the wrapping the 16-bit id needs.
        let id = self.first_id.wrapping_add(i as u16);
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        csum::fill_ipv4_header(ip);

        // i * mss stays far below usize::MAX; truncating it wraps mod 2^32.
        let seq = self.first_seq.wrapping_add((i * self.mss) as u32);
        tcp[TCP_SEQ..TCP_SEQ + 4].copy_from_slice(&seq.to_be_bytes());
        if i + 1 < self.count {
            tcp[TCP_FLAGS] &= !(FIN | PSH);
        }
        if i > 0 {
            tcp[TCP_FLAGS] &= !CWR;
        }
        tcp[TCP_CHECKSUM] = 0;
        tcp[TCP_CHECKSUM + 1] = 0;
        let tcp_len = (tcp.len() + payload_len) as u16;
        // The TCP header is a multiple of 4 bytes, so the pieces' sums add.
        let sum = csum::pseudo_header(self.src, self.dst, PROTO_TCP, tcp_len)
            .add(Sum::of(tcp))
            .add(Sum::of(&pkt[payload.clone()]));
        tcp[TCP_CHECKSUM..TCP_CHECKSUM + 2].copy_from_slice(&sum.checksum().to_be_bytes());
        payload
    }
}

/// For a packet read with vnet flag `NEEDS_CSUM` and gso_type NONE: the
/// 16-bit field at `csum_start + csum_offset` holds the pseudo-header sum
/// only; completes it in place to the full checksum over `pkt[csum_start..]`
/// (the field becomes the complement of the sum of `pkt[csum_start..]`
/// taken with the field's partial value in it). Works for TCP and UDP: when
/// `pkt` is IPv4 with protocol UDP and the field is at offset 6, a computed 0
/// is sent as 0xffff (RFC 768: 0 means "no checksum").
#[inline]
pub fn complete_checksum(
    pkt: &mut [u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<(), SegmentError> {
    let out_of_range = SegmentError::ChecksumOutOfRange {
        start: csum_start,
        offset: csum_offset,
        len: pkt.len(),
    };
    let field = csum_start
        .checked_add(csum_offset)
        .filter(|f| f.checked_add(2).is_some_and(|end| end <= pkt.len()))
        .ok_or(out_of_range)?;
    let mut c = Sum::of(&pkt[csum_start..]).checksum();
    let is_udp_v4 = pkt.len() >= MIN_IP_HEADER_LEN && pkt[0] >> 4 == 4 && pkt[9] == PROTO_UDP;
    if c == 0 && is_udp_v4 && csum_offset == UDP_CHECKSUM {
        c = 0xffff;
    }
    pkt[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests;
