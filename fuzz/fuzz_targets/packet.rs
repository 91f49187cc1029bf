//! Datagrams off the wire and packets from the TUN device, through the udp
//! backend's checks: never a panic; what is delivered comes from a member,
//! from inside its subnet or block, to our subnet or block; what is sent on
//! still has a valid header; an ICMP answer is a valid IPv4 packet.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::OnceLock;

use ipnet::Ipv4Net;
use kolach_packet::forward::{self, ForwardTable, TunVerdict};
use kolach_packet::routes::RouteTable;
use kolach_packet::{icmp, packet};
use libfuzzer_sys::fuzz_target;

const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn table() -> &'static ForwardTable {
    static T: OnceLock<ForwardTable> = OnceLock::new();
    T.get_or_init(|| {
        let local: Ipv4Net = "10.50.18.0/24".parse().unwrap();
        ForwardTable {
            network: "10.50.0.0/16".parse().unwrap(),
            local_subnet: local,
            local_blocks: vec!["203.0.113.0/28".parse().unwrap()],
            tun_addr: local.network(),
            port: 8285,
            routes: RouteTable::new([("10.50.7.0/24".parse().unwrap(), PEER)])
                .with_blocks([("203.0.113.16/28".parse().unwrap(), PEER)]),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let t = table();
    if let Ok(info) = packet::parse(data) {
        assert_eq!(info.total_len, data.len());
        assert!(info.header_len >= packet::MIN_HEADER_LEN && info.header_len <= info.total_len);
    }

    // Received: from the member, or from a stranger.
    for sender in [PEER, Ipv4Addr::new(198, 18, 0, 200)] {
        if forward::from_udp(t, sender, data).is_ok() {
            let info = packet::parse(data).expect("only valid packets are delivered");
            assert_eq!(sender, PEER, "delivered from a stranger");
            let held: [Ipv4Net; 2] = [
                "10.50.7.0/24".parse().unwrap(),
                "203.0.113.16/28".parse().unwrap(),
            ];
            assert!(
                held.iter().any(|n| n.contains(&info.src)),
                "spoofed source {} delivered",
                info.src
            );
            assert!(
                t.local_subnet.contains(&info.dst) || t.local_blocks[0].contains(&info.dst),
                "delivered to {}, not ours",
                info.dst
            );
        }
    }

    // Read from the TUN device.
    let mut pkt = data.to_vec();
    let mut answer = [0u8; icmp::MAX_ANSWER_LEN];
    match forward::from_tun(t, &mut pkt, &mut answer) {
        TunVerdict::Send(to) => {
            assert_eq!(to, SocketAddrV4::new(PEER, 8285));
            let info = packet::parse(&pkt).expect("a forwarded packet keeps a valid header");
            assert!(info.ttl >= 1);
        }
        TunVerdict::Drop {
            answer: Some(n), ..
        } => {
            assert!(n <= icmp::MAX_ANSWER_LEN);
            packet::parse(&answer[..n]).expect("our ICMP answer is a valid IPv4 packet");
        }
        TunVerdict::Drop { answer: None, .. } => {}
    }
});
