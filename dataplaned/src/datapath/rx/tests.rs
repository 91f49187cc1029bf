//! The receive path's delivery against a fake TUN: what reaches the TUN for
//! a batch as `recvmmsg` would have left it, and what happens when the
//! kernel refuses a coalesced write.

use super::*;
use crate::datapath::counters::Counters;
use kolach_packet::routes::RouteTable;
use kolach_packet::testing::udp_packet;
use kolach_packet::vnet::VnetHdr;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Host B (10.50.7.0/24) receiving from A (10.50.18.0/24 at 198.18.0.1).
fn table() -> ForwardTable {
    let local = "10.50.7.0/24".parse().unwrap();
    ForwardTable {
        network: "10.50.0.0/16".parse().unwrap(),
        local_subnet: local,
        local_blocks: Vec::new(),
        tun_addr: Ipv4Addr::new(10, 50, 7, 0),
        port: 8285,
        routes: RouteTable::new([(
            "10.50.18.0/24".parse().unwrap(),
            Ipv4Addr::new(198, 18, 0, 1),
        )]),
    }
}

const PEER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 8285);

/// `n` datagrams of one UDP flow from a pod of A to a pod of B.
fn flow(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let payload = vec![i as u8; 100];
            udp_packet([10, 50, 18, 5], [10, 50, 7, 9], [4000, 5000], &payload)
        })
        .collect()
}

/// Puts `pkts` in the receive slots as one datagram per message from PEER,
/// as `recvmmsg` without GRO leaves them.
fn received(rx: &mut Rx, pkts: &[Vec<u8>]) {
    rx.rearm();
    for (j, p) in pkts.iter().enumerate() {
        rx.slots[j][..p.len()].copy_from_slice(p);
        rx.names[j] = mmsg::sockaddr(PEER);
        let h = &mut rx.hdrs[j];
        h.msg_len = p.len() as u32;
        h.msg_hdr.msg_controllen = 0;
        h.msg_hdr.msg_flags = 0;
    }
}

/// What a tally counted.
fn counts(t: &mut Tally) -> Counters {
    let c = Counters::default();
    c.add(t);
    c
}

/// A TUN that records every write (vnet header, packet bytes) and refuses
/// super-packets of the GSO types in `refuse` with EINVAL, as a kernel that
/// cannot split them does.
#[derive(Default)]
struct FakeTun {
    refuse: Vec<u8>,
    refused: usize,
    writes: Vec<(VnetHdr, Vec<u8>)>,
}

impl TunWrite for FakeTun {
    unsafe fn writev(&mut self, iov: &[libc::iovec]) -> io::Result<usize> {
        let mut bytes = Vec::new();
        for v in iov {
            // SAFETY: the iovecs point at live buffers for the duration of
            // the call (the trait's contract, as for writev(2)).
            bytes.extend_from_slice(unsafe {
                std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len)
            });
        }
        let hdr = VnetHdr::decode(&bytes[..vnet::LEN]).expect("a vnet header first");
        if hdr.gso_type != vnet::GSO_NONE && self.refuse.contains(&hdr.gso_type) {
            self.refused += 1;
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let len = bytes.len();
        self.writes.push((hdr, bytes[vnet::LEN..].to_vec()));
        Ok(len)
    }
}

#[test]
fn a_flow_of_datagrams_is_one_coalesced_write() {
    let mut rx = Rx::new(Framing::Offload, false, true);
    let pkts = flow(10);
    received(&mut rx, &pkts);
    let mut tun = FakeTun::default();
    rx.deliver(&mut tun, &table(), pkts.len());
    assert_eq!(tun.writes.len(), 1, "{:?}", tun.writes.len());
    assert_eq!(tun.writes[0].0.gso_type, vnet::GSO_UDP_L4);
    assert_eq!(counts(&mut rx.written).tun_tx_packets.into_inner(), 1);
    assert!(!rx.uso_refused);
}

#[test]
fn a_refused_udp_super_packet_is_written_datagram_by_datagram_and_udp_coalescing_stops() {
    let mut rx = Rx::new(Framing::Offload, false, true);
    let mut tun = FakeTun {
        refuse: vec![vnet::GSO_UDP_L4],
        ..Default::default()
    };
    let pkts = flow(10);
    received(&mut rx, &pkts);
    rx.deliver(&mut tun, &table(), pkts.len());
    assert_eq!(tun.refused, 1);
    let got: Vec<&Vec<u8>> = tun.writes.iter().map(|(_, p)| p).collect();
    assert_eq!(
        got,
        pkts.iter().collect::<Vec<_>>(),
        "each datagram alone, in order, intact"
    );
    assert!(tun.writes.iter().all(|(h, _)| *h == VnetHdr::default()));
    assert!(
        rx.uso_refused,
        "the loop is told, for the counters and the status"
    );
    let c = counts(&mut rx.written);
    assert_eq!(c.dropped(DropReason::IoError), 0);
    assert_eq!(c.tun_tx_packets.into_inner(), 10);

    // The next batch is not offered as a super-packet again.
    let pkts = flow(5);
    received(&mut rx, &pkts);
    tun.writes.clear();
    rx.deliver(&mut tun, &table(), pkts.len());
    assert_eq!(tun.refused, 1);
    assert_eq!(tun.writes.len(), 5);
}

#[test]
fn a_refused_tcp_super_packet_is_written_segment_by_segment() {
    use kolach_packet::testing::{tcp_packet, Tcp};
    let mut rx = Rx::new(Framing::Offload, false, true);
    let mut tun = FakeTun {
        refuse: vec![vnet::GSO_TCPV4],
        ..Default::default()
    };
    let pkts: Vec<Vec<u8>> = (0..4u32)
        .map(|i| {
            tcp_packet(&Tcp {
                src: [10, 50, 18, 5],
                dst: [10, 50, 7, 9],
                ports: [4000, 5000],
                seq: 1000 + i * 500,
                ack: 1,
                flags: 0x10,
                window: 512,
                opts: Vec::new(),
                payload: vec![i as u8; 500],
            })
        })
        .collect();
    received(&mut rx, &pkts);
    rx.deliver(&mut tun, &table(), pkts.len());
    assert_eq!(tun.refused, 1);
    let got: Vec<&Vec<u8>> = tun.writes.iter().map(|(_, p)| p).collect();
    assert_eq!(got, pkts.iter().collect::<Vec<_>>());
    assert!(
        !rx.uso_refused,
        "TCP refusals do not turn UDP coalescing off"
    );
}

#[test]
fn packets_that_fail_the_checks_never_reach_the_tun() {
    let mut rx = Rx::new(Framing::Offload, false, true);
    let to = [10, 50, 7, 9];
    let pkts = [
        udp_packet([10, 50, 18, 5], to, [4000, 5000], b"one"),
        // A spoofed inner source (not in A's subnet).
        udp_packet([10, 50, 99, 5], to, [4000, 5000], b"spoofed"),
        udp_packet([10, 50, 18, 6], to, [4000, 5000], b"two"),
    ];
    received(&mut rx, &pkts);
    let mut tun = FakeTun::default();
    rx.deliver(&mut tun, &table(), pkts.len());
    let got: Vec<&Vec<u8>> = tun.writes.iter().map(|(_, p)| p).collect();
    assert_eq!(got, vec![&pkts[0], &pkts[2]]);
    assert_eq!(counts(&mut rx.tally).dropped(DropReason::SpoofedSource), 1);
}
