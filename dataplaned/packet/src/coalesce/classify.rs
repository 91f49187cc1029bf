//! What a received packet is to the coalescer ([`super`]): a TCP segment or
//! UDP datagram that may join a flow (its checksum verified), one of a flow
//! that must be written alone, a fragment whose ports cannot be read, or
//! something no flow holds. Also the byte offsets both sides use.

use crate::csum::{self, Sum};

pub(super) const IP_HDR: usize = 20;
pub(super) const MAX_TCP_HDR: usize = 60;
pub(super) const UDP_HDR: usize = 8;
pub(super) const MAX_IP_LEN: usize = 65535;
pub(super) const PROTO_TCP: u8 = 6;
pub(super) const PROTO_UDP: u8 = 17;
pub(super) const TCP_PSH: u8 = 0x08;
pub(super) const TCP_ACK: u8 = 0x10;
pub(super) const IP_DF: u8 = 0x40;
/// Byte offsets into an IPv4 (IHL 5) + TCP or UDP packet.
pub(super) const TOS: usize = 1;
pub(super) const TTL: usize = 8;
pub(super) const TCP_SEQ: usize = IP_HDR + 4;
pub(super) const TCP_ACK_NO: usize = IP_HDR + 8;
pub(super) const TCP_OFF: usize = IP_HDR + 12;
pub(super) const TCP_FLAGS: usize = IP_HDR + 13;
pub(super) const TCP_WINDOW: usize = IP_HDR + 14;
pub(super) const TCP_CSUM: usize = IP_HDR + 16;
pub(super) const TCP_OPTIONS: usize = IP_HDR + 20;
pub(super) const UDP_LEN: usize = IP_HDR + 4;
pub(super) const UDP_CSUM: usize = IP_HDR + 6;

/// A TCP or UDP flow: addresses, the four port bytes as received, protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Key {
    pub(super) src: [u8; 4],
    pub(super) dst: [u8; 4],
    pub(super) ports: [u8; 4],
    pub(super) proto: u8,
}

/// What a packet is to the coalescer.
pub(super) enum Kind {
    /// Neither TCP nor UDP (or UDP when it is not coalesced): no flow can
    /// hold it.
    Other,
    /// TCP or UDP whose ports cannot be read (a non-first fragment): it may
    /// belong to any held flow of its protocol between these addresses.
    NoPorts {
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
    },
    /// TCP or UDP that must be written alone.
    Alone(Key),
    /// A segment or datagram that may be coalesced.
    Segment(Seg),
}

pub(super) struct Seg {
    pub(super) key: Key,
    /// TCP only.
    pub(super) seq: u32,
    /// IP + TCP/UDP header bytes.
    pub(super) hdr_len: usize,
    pub(super) payload: usize,
    /// TCP only.
    pub(super) psh: bool,
}

#[inline]
pub(super) fn classify(pkt: &[u8], udp: bool) -> Kind {
    if pkt.len() < IP_HDR || pkt[0] >> 4 != 4 {
        return Kind::Other;
    }
    let proto = pkt[9];
    if proto != PROTO_TCP && !(udp && proto == PROTO_UDP) {
        return Kind::Other;
    }
    let src: [u8; 4] = [pkt[12], pkt[13], pkt[14], pkt[15]];
    let dst: [u8; 4] = [pkt[16], pkt[17], pkt[18], pkt[19]];
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
    if frag & 0x1fff != 0 || ihl < IP_HDR || pkt.len() < ihl + 4 {
        return Kind::NoPorts { src, dst, proto };
    }
    let key = Key {
        src,
        dst,
        ports: [pkt[ihl], pkt[ihl + 1], pkt[ihl + 2], pkt[ihl + 3]],
        proto,
    };
    let more_fragments = frag & 0x2000 != 0;
    // The reserved flag bit: Linux GRO never merges such packets either.
    let reserved = frag & 0x8000 != 0;
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if ihl != IP_HDR || more_fragments || reserved || total != pkt.len() {
        return Kind::Alone(key);
    }
    let seg = match proto {
        PROTO_TCP => tcp_segment(pkt, key),
        _ => udp_datagram(pkt, key),
    };
    seg.map_or(Kind::Alone(key), Kind::Segment)
}

/// A TCP segment (IHL 5, not a fragment) that may join a flow, if it is one.
fn tcp_segment(pkt: &[u8], key: Key) -> Option<Seg> {
    if pkt.len() < TCP_OPTIONS {
        return None;
    }
    let hdr_len = IP_HDR + usize::from(pkt[TCP_OFF] >> 4) * 4;
    let flags = pkt[TCP_FLAGS];
    // Reserved/NS bits, and every flag but ACK and PSH, end coalescing.
    let plain = pkt[TCP_OFF] & 0x0f == 0 && flags & !TCP_PSH == TCP_ACK;
    if hdr_len < TCP_OPTIONS || hdr_len >= pkt.len() || !plain {
        return None;
    }
    let tcp_len = (pkt.len() - IP_HDR) as u16;
    let sum =
        csum::pseudo_header(key.src, key.dst, PROTO_TCP, tcp_len).add(Sum::of(&pkt[IP_HDR..]));
    if sum.0 != 0xffff {
        return None;
    }
    Some(Seg {
        key,
        seq: be32(&pkt[TCP_SEQ..]),
        hdr_len,
        payload: pkt.len() - hdr_len,
        psh: flags & TCP_PSH != 0,
    })
}

/// A UDP datagram (IHL 5, not a fragment) that may join a flow: its length
/// field is the IP payload, it has payload, and a checksum that verifies.
fn udp_datagram(pkt: &[u8], key: Key) -> Option<Seg> {
    let hdr_len = IP_HDR + UDP_HDR;
    if pkt.len() <= hdr_len {
        return None;
    }
    let udp_len = u16::from_be_bytes([pkt[UDP_LEN], pkt[UDP_LEN + 1]]);
    let unchecked = pkt[UDP_CSUM] == 0 && pkt[UDP_CSUM + 1] == 0;
    if usize::from(udp_len) != pkt.len() - IP_HDR || unchecked {
        return None;
    }
    let sum =
        csum::pseudo_header(key.src, key.dst, PROTO_UDP, udp_len).add(Sum::of(&pkt[IP_HDR..]));
    if sum.0 != 0xffff {
        return None;
    }
    Some(Seg {
        key,
        seq: 0,
        hdr_len,
        payload: pkt.len() - hdr_len,
        psh: false,
    })
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
