//! A small reader for the classic pcap files `tcpdump -w` writes, so a test
//! can check every datagram that crossed an interface byte by byte (the fast
//! path's wire format): the 24-byte global header (either byte order,
//! microsecond or nanosecond magic), 16-byte record headers, and the link
//! layers tcpdump gives on Linux: Ethernet (1, 802.1Q tags skipped), raw IP
//! (101), Linux cooked v1 (113) and v2 (276).

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Context, Result};

pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The frame's length on the wire.
    pub orig_len: u32,
    /// What was captured (shorter than `orig_len` when cut by the snap length).
    pub data: Vec<u8>,
}

impl Record {
    pub fn complete(&self) -> bool {
        self.data.len() == self.orig_len as usize
    }
}

/// A whole capture file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    pub linktype: u32,
    pub snaplen: u32,
    pub records: Vec<Record>,
    /// The file ended inside a record (the writer was killed mid-write); the
    /// partial record is not in `records`.
    pub truncated: bool,
}

/// Reads and parses a pcap file.
pub fn read(path: &Path) -> Result<Capture> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Parses the bytes of a pcap file.
pub fn parse(bytes: &[u8]) -> Result<Capture> {
    if bytes.len() < 24 {
        bail!("{} bytes: shorter than a pcap global header", bytes.len());
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    let big = match magic {
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => true,
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => false,
        _ => bail!("not a pcap file (magic {magic:02x?}; pcapng is not supported)"),
    };
    let u32_at = |off: usize| -> u32 {
        let b = [bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]];
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let snaplen = u32_at(16);
    // The upper bits of the link-type field may carry an FCS length.
    let linktype = u32_at(20) & 0x0fff_ffff;
    let mut records = Vec::new();
    let mut off = 24;
    let mut truncated = false;
    while off < bytes.len() {
        if bytes.len() - off < 16 {
            truncated = true;
            break;
        }
        let incl = u32_at(off + 8) as usize;
        let orig_len = u32_at(off + 12);
        if incl > 0x0400_0000 {
            bail!("record at byte {off} claims {incl} captured bytes");
        }
        let start = off + 16;
        if bytes.len() - start < incl {
            truncated = true;
            break;
        }
        records.push(Record {
            orig_len,
            data: bytes[start..start + incl].to_vec(),
        });
        off = start + incl;
    }
    Ok(Capture {
        linktype,
        snaplen,
        records,
        truncated,
    })
}

impl Capture {
    /// The IPv4 packet a frame carries (from its network header to the end
    /// of the frame, Ethernet padding included), or None for other protocols.
    pub fn ipv4<'a>(&self, r: &'a Record) -> Option<&'a [u8]> {
        network_layer(self.linktype, &r.data)
    }
}

/// The IPv4 payload of a frame of link type `linktype`.
pub fn network_layer(linktype: u32, frame: &[u8]) -> Option<&[u8]> {
    let be16 = |b: &[u8], at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
    };
    let (proto, rest) = match linktype {
        LINKTYPE_ETHERNET => {
            let mut at = 12;
            let mut proto = be16(frame, at)?;
            while proto == ETHERTYPE_VLAN || proto == ETHERTYPE_QINQ {
                at += 4;
                proto = be16(frame, at)?;
            }
            (proto, frame.get(at + 2..)?)
        }
        LINKTYPE_LINUX_SLL => (be16(frame, 14)?, frame.get(16..)?),
        LINKTYPE_LINUX_SLL2 => (be16(frame, 0)?, frame.get(20..)?),
        LINKTYPE_RAW => {
            let v = frame.first()? >> 4;
            (if v == 4 { ETHERTYPE_IPV4 } else { 0 }, frame)
        }
        _ => return None,
    };
    (proto == ETHERTYPE_IPV4).then_some(rest)
}

/// A UDP datagram in an IPv4 packet, as the underlay carried it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// The outer IPv4 header's checksum verifies.
    pub ip_header_ok: bool,
    /// The UDP payload, exactly as long as the UDP length field says.
    pub payload: &'a [u8],
}

/// Dissects an IPv4 packet (trailing link padding allowed) holding a whole,
/// unfragmented UDP datagram; None for anything else or when lengths do not
/// fit (a datagram cut by the snap length, say).
pub fn udp_in_ipv4(ip: &[u8]) -> Option<UdpDatagram<'_>> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff;
    if ihl < 20 || total < ihl + 8 || total > ip.len() || frag != 0 || ip[9] != 17 {
        return None;
    }
    let udp = &ip[ihl..total];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < 8 || udp_len > udp.len() {
        return None;
    }
    Some(UdpDatagram {
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        ip_header_ok: crate::traffic::packet::ipv4_header_ok(ip),
        payload: &udp[8..udp_len],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::packet::UdpPacket;

    fn file(big: bool, nanos: bool, linktype: u32, frames: &[&[u8]]) -> Vec<u8> {
        let w32 = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut f = Vec::new();
        f.extend_from_slice(&w32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
        f.extend_from_slice(&w16(2));
        f.extend_from_slice(&w16(4));
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&w32(262_144));
        f.extend_from_slice(&w32(linktype));
        for (i, fr) in frames.iter().enumerate() {
            f.extend_from_slice(&w32(1_700_000_000 + i as u32));
            f.extend_from_slice(&w32(0));
            f.extend_from_slice(&w32(fr.len() as u32));
            f.extend_from_slice(&w32(fr.len() as u32));
            f.extend_from_slice(fr);
        }
        f
    }

    fn outer(payload: &[u8]) -> Vec<u8> {
        UdpPacket {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(198, 18, 0, 2),
            src_port: 8285,
            dst_port: 8285,
            ttl: 64,
            id: 1,
            payload,
        }
        .build()
    }

    fn ethernet(ethertype: &[u8], ip: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        f.extend_from_slice(ethertype);
        f.extend_from_slice(ip);
        f
    }

    #[test]
    fn reads_both_byte_orders_and_magics() {
        let ip = outer(b"inner");
        let frame = ethernet(&[0x08, 0x00], &ip);
        for (big, nanos) in [(false, false), (true, false), (false, true), (true, true)] {
            let c = parse(&file(big, nanos, LINKTYPE_ETHERNET, &[&frame, &frame])).unwrap();
            assert_eq!((c.linktype, c.snaplen, c.truncated), (1, 262_144, false));
            assert_eq!(c.records.len(), 2);
            assert!(c.records[0].complete());
            let d = udp_in_ipv4(c.ipv4(&c.records[1]).unwrap()).unwrap();
            assert_eq!(d.payload, b"inner");
            assert_eq!((d.src_port, d.dst_port), (8285, 8285));
            assert_eq!(d.src, Ipv4Addr::new(198, 18, 0, 1));
            assert!(d.ip_header_ok);
        }
    }

    #[test]
    fn strips_every_link_layer() {
        let ip = outer(b"x");
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        let mut padded = ethernet(&[0x81, 0x00, 0, 7, 0x08, 0x00], &ip);
        padded.extend_from_slice(&[0; 13]); // Ethernet minimum-size padding
        for (lt, frame) in [
            (LINKTYPE_LINUX_SLL, sll),
            (LINKTYPE_LINUX_SLL2, sll2),
            (LINKTYPE_RAW, ip.clone()),
            (LINKTYPE_ETHERNET, padded),
        ] {
            let l3 = network_layer(lt, &frame).unwrap_or_else(|| panic!("linktype {lt}"));
            assert_eq!(udp_in_ipv4(l3).unwrap().payload, b"x", "linktype {lt}");
        }
        assert_eq!(
            network_layer(LINKTYPE_ETHERNET, &ethernet(&[0x86, 0xdd], &ip)),
            None
        );
        assert_eq!(network_layer(999, &ip), None);
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        assert!(parse(&[0; 10]).is_err());
        assert!(parse(&[
            0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ])
        .is_err());
        let ip = outer(b"abc");
        let mut f = file(false, false, LINKTYPE_RAW, &[&ip]);
        f.truncate(f.len() - 1);
        let c = parse(&f).unwrap();
        assert!(c.truncated && c.records.is_empty());
        // A fragment, a lying length, not UDP.
        let mut frag = ip.clone();
        frag[6] = 0x20;
        assert_eq!(udp_in_ipv4(&frag), None);
        let mut long = ip.clone();
        long[3] += 1;
        assert_eq!(udp_in_ipv4(&long), None);
        let mut tcp = ip.clone();
        tcp[9] = 6;
        assert_eq!(udp_in_ipv4(&tcp), None);
        let mut bad_sum = ip;
        bad_sum[8] ^= 1;
        assert!(!udp_in_ipv4(&bad_sum).unwrap().ip_header_ok);
    }
}
