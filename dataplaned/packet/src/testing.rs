//! Packet builders for tests, here and in kolach-dataplaned's (feature
//! `testing`): valid IPv4 packets, TCP segments and UDP datagrams with their
//! checksums filled the plain way.

use std::net::Ipv4Addr;

use crate::packet::checksum;

/// Builds a valid IPv4 packet with `options` (a multiple of 4 bytes) and
/// `payload`, checksum filled in.
pub fn build(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    protocol: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let hl = 20 + options.len();
    let total = hl + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x40 | (hl / 4) as u8;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = ttl;
    p[9] = protocol;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..hl].copy_from_slice(options);
    p[hl..].copy_from_slice(payload);
    let c = checksum(&p[..hl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

/// A TCP packet to build; `tcp_packet` fills both checksums.
#[derive(Clone)]
pub struct Tcp {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ports: [u16; 2],
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub opts: Vec<u8>,
    pub payload: Vec<u8>,
}

pub fn tcp_packet(t: &Tcp) -> Vec<u8> {
    let thl = 20 + t.opts.len();
    let mut seg = vec![0u8; thl];
    seg[0..2].copy_from_slice(&t.ports[0].to_be_bytes());
    seg[2..4].copy_from_slice(&t.ports[1].to_be_bytes());
    seg[4..8].copy_from_slice(&t.seq.to_be_bytes());
    seg[8..12].copy_from_slice(&t.ack.to_be_bytes());
    seg[12] = ((thl / 4) as u8) << 4;
    seg[13] = t.flags;
    seg[14..16].copy_from_slice(&t.window.to_be_bytes());
    seg[20..].copy_from_slice(&t.opts);
    seg.extend_from_slice(&t.payload);
    let c = checksum(&[pseudo(t.src, t.dst, 6, seg.len()), seg.clone()].concat());
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    build(t.src.into(), t.dst.into(), 64, 6, &[], &seg)
}

/// A UDP datagram with its checksum filled (a computed 0 is sent as 0xffff).
pub fn udp_packet(src: [u8; 4], dst: [u8; 4], ports: [u16; 2], payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; 8];
    d[0..2].copy_from_slice(&ports[0].to_be_bytes());
    d[2..4].copy_from_slice(&ports[1].to_be_bytes());
    d[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(payload);
    let c = udp_checksum(src, dst, &d);
    d[6..8].copy_from_slice(&c.to_be_bytes());
    build(src.into(), dst.into(), 64, 17, &[], &d)
}

/// The checksum field for UDP header + payload `d` (its field counted as is).
fn udp_checksum(src: [u8; 4], dst: [u8; 4], d: &[u8]) -> u16 {
    match checksum(&[pseudo(src, dst, 17, d.len()), d.to_vec()].concat()) {
        0 => 0xffff,
        c => c,
    }
}

pub fn pseudo(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: usize) -> Vec<u8> {
    let len = (l4_len as u16).to_be_bytes();
    [&src[..], &dst[..], &[0, proto], &len[..]].concat()
}
