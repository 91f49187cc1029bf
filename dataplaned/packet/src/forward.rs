//! The udp backend's per-packet decisions, free of I/O.
//!
//! kolach-dataplaned's packet loop (its send and receive paths) asks [`from_tun`] about every packet it
//! reads from the TUN (a TCP super-packet once, before it is cut) and
//! [`from_udp`] about every datagram it receives (each one of a GRO batch), and
//! does what they say.

use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;

use crate::icmp;
use crate::packet;
use crate::routes::RouteTable;

/// Everything the loop consults per packet; swapped whole on every snapshot.
#[derive(Debug, Clone)]
pub struct ForwardTable {
    pub network: Ipv4Net,
    pub local_subnet: Ipv4Net,
    /// This host's pool blocks (DESIGN §10): inner destinations a peer may
    /// send to besides `local_subnet`, and sources we answer with ICMP.
    pub local_blocks: Vec<Ipv4Net>,
    /// Source of the ICMP errors we answer with: the TUN's own address.
    pub tun_addr: Ipv4Addr,
    /// Peers listen on the same port as we do (it is the Network's config).
    pub port: u16,
    pub routes: RouteTable,
}

/// Why a packet was not forwarded. The string forms are the contract keys of
/// `Counters.dropped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// UDP source address is not a current lease's PublicIP.
    UnknownSender,
    /// Inner source outside the sending host's subnet and blocks.
    SpoofedSource,
    /// Not a valid IPv4 packet (bad header, checksum or length).
    Malformed,
    /// TUN packet to an address outside the Network and every peer's blocks.
    NoRoute,
    /// TUN packet to an address inside the Network that no peer leases
    /// (answered with ICMP net unreachable where allowed).
    Unleased,
    TtlExceeded,
    /// Non-IPv4 packet read from the TUN (IPv6 and the like).
    NotIpv4,
    /// The kernel refused to send or deliver the packet.
    IoError,
    /// A member's datagram whose inner destination is outside this host's
    /// subnet and blocks: delivering it would make this host forward for the
    /// sender.
    WrongDestination,
}

impl DropReason {
    /// In the order a hot upgrade carries the counters: new reasons go last.
    pub const ALL: [DropReason; 9] = [
        DropReason::UnknownSender,
        DropReason::SpoofedSource,
        DropReason::Malformed,
        DropReason::NoRoute,
        DropReason::Unleased,
        DropReason::TtlExceeded,
        DropReason::NotIpv4,
        DropReason::IoError,
        DropReason::WrongDestination,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownSender => "unknown-sender",
            DropReason::SpoofedSource => "spoofed-source",
            DropReason::Malformed => "malformed",
            DropReason::NoRoute => "no-route",
            DropReason::Unleased => "unleased",
            DropReason::TtlExceeded => "ttl-exceeded",
            DropReason::NotIpv4 => "not-ipv4",
            DropReason::IoError => "io-error",
            DropReason::WrongDestination => "wrong-destination",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunVerdict {
    /// Send the packet (TTL already decremented) in a datagram to this peer.
    Send(SocketAddrV4),
    /// Do not forward. When `answer` is `Some(n)`, the first `n` bytes of the
    /// answer buffer hold an ICMP error to write back into the TUN.
    Drop {
        reason: DropReason,
        answer: Option<usize>,
    },
}

fn drop_with(
    reason: DropReason,
    kind: (u8, u8),
    t: &ForwardTable,
    pkt: &[u8],
    info: &packet::Ipv4Info,
    answer_buf: &mut [u8],
) -> TunVerdict {
    let answer = if icmp::may_answer(pkt, info, t.network, &t.local_blocks) {
        icmp::build_error(answer_buf, kind, t.tun_addr, pkt, info)
    } else {
        None
    };
    TunVerdict::Drop { reason, answer }
}

/// Decides about a packet read from the TUN device. May decrement its TTL in
/// place; may write an ICMP error into `answer_buf` (at least
/// [`icmp::MAX_ANSWER_LEN`] bytes).
#[inline]
pub fn from_tun(t: &ForwardTable, pkt: &mut [u8], answer_buf: &mut [u8]) -> TunVerdict {
    let drop = |reason| TunVerdict::Drop {
        reason,
        answer: None,
    };
    if packet::version(pkt) != Some(4) {
        return drop(DropReason::NotIpv4);
    }
    let info = match packet::parse(pkt) {
        Ok(i) => i,
        Err(_) => return drop(DropReason::Malformed),
    };
    // A peer's block lies outside the Network; its table is consulted only
    // for such destinations, so an overlay destination costs what it did.
    let peer = if t.network.contains(&info.dst) {
        t.routes.lookup(info.dst)
    } else {
        match t.routes.lookup_block(info.dst) {
            Some(p) => Some(p),
            None => return drop(DropReason::NoRoute),
        }
    };
    if info.ttl <= 1 {
        return drop_with(
            DropReason::TtlExceeded,
            icmp::TIME_EXCEEDED,
            t,
            pkt,
            &info,
            answer_buf,
        );
    }
    let Some(peer) = peer else {
        return drop_with(
            DropReason::Unleased,
            icmp::DEST_UNREACHABLE,
            t,
            pkt,
            &info,
            answer_buf,
        );
    };
    packet::decrement_ttl(pkt);
    TunVerdict::Send(SocketAddrV4::new(peer, t.port))
}

/// Decides about a datagram payload received from `sender`: deliver it to the
/// TUN device as is (`Ok`) or drop it. The sender must hold a lease, the
/// packet be valid IPv4, its source inside the sender's subnet or blocks and
/// its destination inside our subnet or blocks (a peer only ever sends
/// there; anything else would have this host forward the sender's packets
/// elsewhere). The subnets come first: without blocks, nothing more is
/// looked at than before.
#[inline]
pub fn from_udp(t: &ForwardTable, sender: Ipv4Addr, pkt: &[u8]) -> Result<(), DropReason> {
    let Some(subnets) = t.routes.subnets_of(sender) else {
        return Err(DropReason::UnknownSender);
    };
    let info = packet::parse(pkt).map_err(|_| DropReason::Malformed)?;
    if !subnets.iter().any(|n| n.contains(&info.src)) {
        return Err(DropReason::SpoofedSource);
    }
    if !t.local_subnet.contains(&info.dst) && !t.local_blocks.iter().any(|b| b.contains(&info.dst))
    {
        return Err(DropReason::WrongDestination);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::build;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// Two hosts of one overlay, A = 10.50.18.0/24 @ 198.18.0.1 and
    /// B = 10.50.7.0/24 @ 198.18.0.2, each with the other as its only route.
    fn pair() -> (ForwardTable, ForwardTable) {
        let net: Ipv4Net = "10.50.0.0/16".parse().unwrap();
        let a: Ipv4Net = "10.50.18.0/24".parse().unwrap();
        let b: Ipv4Net = "10.50.7.0/24".parse().unwrap();
        let table = |local: Ipv4Net, peer: Ipv4Net, peer_ip: &str| ForwardTable {
            network: net,
            local_subnet: local,
            local_blocks: Vec::new(),
            tun_addr: local.network(),
            port: 8285,
            routes: RouteTable::new([(peer, ip(peer_ip))]),
        };
        (table(a, b, "198.18.0.2"), table(b, a, "198.18.0.1"))
    }

    #[test]
    fn a_packet_crosses_from_a_to_b() {
        let (a, b) = pair();
        let mut pkt = build(ip("10.50.18.5"), ip("10.50.7.9"), 64, 17, &[], b"hello");
        let mut ans = [0u8; icmp::MAX_ANSWER_LEN];
        let v = from_tun(&a, &mut pkt, &mut ans);
        assert_eq!(v, TunVerdict::Send("198.18.0.2:8285".parse().unwrap()));
        assert_eq!(packet::parse(&pkt).unwrap().ttl, 63);
        assert_eq!(from_udp(&b, ip("198.18.0.1"), &pkt), Ok(()));
    }

    #[test]
    fn tun_side_drops() {
        let (a, _) = pair();
        let mut ans = [0u8; icmp::MAX_ANSWER_LEN];
        let mut v6 = [0x60u8; 48];
        assert_eq!(
            from_tun(&a, &mut v6, &mut ans),
            TunVerdict::Drop {
                reason: DropReason::NotIpv4,
                answer: None
            }
        );
        let mut bad = build(ip("10.50.18.5"), ip("10.50.7.9"), 64, 17, &[], b"x");
        bad[10] ^= 0xff;
        assert!(matches!(
            from_tun(&a, &mut bad, &mut ans),
            TunVerdict::Drop {
                reason: DropReason::Malformed,
                ..
            }
        ));
        let mut outside = build(ip("10.50.18.5"), ip("8.8.8.8"), 64, 17, &[], b"x");
        assert_eq!(
            from_tun(&a, &mut outside, &mut ans),
            TunVerdict::Drop {
                reason: DropReason::NoRoute,
                answer: None
            }
        );
    }

    #[test]
    fn unleased_destination_gets_net_unreachable() {
        let (a, _) = pair();
        let mut ans = [0u8; icmp::MAX_ANSWER_LEN];
        let mut pkt = build(ip("10.50.18.5"), ip("10.50.99.1"), 64, 17, &[], b"12345678");
        let TunVerdict::Drop {
            reason: DropReason::Unleased,
            answer: Some(n),
        } = from_tun(&a, &mut pkt, &mut ans)
        else {
            panic!("expected an answered drop");
        };
        let info = packet::parse(&ans[..n]).unwrap();
        assert_eq!((info.src, info.dst), (ip("10.50.18.0"), ip("10.50.18.5")));
        assert_eq!((ans[20], ans[21]), icmp::DEST_UNREACHABLE);
        // The TTL of the quoted packet is the original one.
        assert_eq!(packet::parse(&pkt).unwrap().ttl, 64);
    }

    #[test]
    fn ttl_one_and_zero_get_time_exceeded() {
        let (a, _) = pair();
        for ttl in [0u8, 1] {
            let mut ans = [0u8; icmp::MAX_ANSWER_LEN];
            let mut pkt = build(ip("10.50.18.5"), ip("10.50.7.9"), ttl, 17, &[], b"x");
            let TunVerdict::Drop {
                reason: DropReason::TtlExceeded,
                answer: Some(n),
            } = from_tun(&a, &mut pkt, &mut ans)
            else {
                panic!("ttl {ttl}: expected time exceeded");
            };
            assert_eq!((ans[20], ans[21]), icmp::TIME_EXCEEDED);
            assert_eq!(packet::checksum(&ans[20..n]), 0);
        }
        // TTL 2 still goes out, with TTL 1.
        let mut ans = [0u8; icmp::MAX_ANSWER_LEN];
        let mut pkt = build(ip("10.50.18.5"), ip("10.50.7.9"), 2, 17, &[], b"x");
        assert!(matches!(
            from_tun(&a, &mut pkt, &mut ans),
            TunVerdict::Send(_)
        ));
        assert_eq!(packet::parse(&pkt).unwrap().ttl, 1);
    }

    #[test]
    fn icmp_errors_are_not_answered() {
        let (a, _) = pair();
        let mut ans = [0u8; icmp::MAX_ANSWER_LEN];
        let mut pkt = build(
            ip("10.50.18.5"),
            ip("10.50.99.1"),
            64,
            1,
            &[],
            &[3, 1, 0, 0, 0, 0, 0, 0],
        );
        assert_eq!(
            from_tun(&a, &mut pkt, &mut ans),
            TunVerdict::Drop {
                reason: DropReason::Unleased,
                answer: None
            }
        );
    }

    #[test]
    fn udp_side_drops() {
        let (_, b) = pair();
        let good = build(ip("10.50.18.5"), ip("10.50.7.9"), 63, 17, &[], b"x");
        assert_eq!(
            from_udp(&b, ip("198.18.0.99"), &good),
            Err(DropReason::UnknownSender)
        );
        let spoofed = build(ip("10.50.99.5"), ip("10.50.7.9"), 63, 17, &[], b"x");
        assert_eq!(
            from_udp(&b, ip("198.18.0.1"), &spoofed),
            Err(DropReason::SpoofedSource)
        );
        assert_eq!(
            from_udp(&b, ip("198.18.0.1"), &good[..good.len() - 1]),
            Err(DropReason::Malformed)
        );
        assert_eq!(
            from_udp(&b, ip("198.18.0.1"), b"\x60garbage"),
            Err(DropReason::Malformed)
        );
        // To B's own subnet (its TUN address included) only.
        let to_tun = build(ip("10.50.18.5"), ip("10.50.7.0"), 63, 1, &[], b"x");
        assert_eq!(from_udp(&b, ip("198.18.0.1"), &to_tun), Ok(()));
        for elsewhere in ["10.50.18.9", "10.50.99.1", "192.0.2.1", "198.18.0.2"] {
            let p = build(ip("10.50.18.5"), ip(elsewhere), 63, 17, &[], b"x");
            assert_eq!(
                from_udp(&b, ip("198.18.0.1"), &p),
                Err(DropReason::WrongDestination),
                "{elsewhere}"
            );
        }
    }

    fn nets(v: &[&str]) -> Vec<Ipv4Net> {
        v.iter().map(|n| n.parse().unwrap()).collect()
    }

    /// Three hosts with pool blocks besides their subnets:
    /// A = 10.50.18.0/24 + 203.0.113.0/28 @ 198.18.0.1,
    /// B = 10.50.7.0/24 + 203.0.113.16/28, 198.51.100.0/26 @ 198.18.0.2,
    /// C = 10.50.9.0/24 + 203.0.113.32/28 @ 198.18.0.3; A's and B's tables.
    fn trio() -> (ForwardTable, ForwardTable) {
        let hosts = [
            ("10.50.18.0/24", "198.18.0.1", nets(&["203.0.113.0/28"])),
            (
                "10.50.7.0/24",
                "198.18.0.2",
                nets(&["203.0.113.16/28", "198.51.100.0/26"]),
            ),
            ("10.50.9.0/24", "198.18.0.3", nets(&["203.0.113.32/28"])),
        ];
        let table = |me: usize| {
            let (local, _, blocks) = &hosts[me];
            let peers = hosts.iter().enumerate().filter(|(i, _)| *i != me);
            let local: Ipv4Net = local.parse().unwrap();
            ForwardTable {
                network: "10.50.0.0/16".parse().unwrap(),
                local_subnet: local,
                local_blocks: blocks.clone(),
                tun_addr: local.network(),
                port: 8285,
                routes: RouteTable::new(
                    peers
                        .clone()
                        .map(|(_, (s, pip, _))| (s.parse().unwrap(), ip(pip))),
                )
                .with_blocks(
                    peers.flat_map(|(_, (_, pip, b))| b.iter().map(move |b| (*b, ip(pip)))),
                ),
            }
        };
        (table(0), table(1))
    }

    #[test]
    fn a_packet_to_a_block_goes_to_its_holder() {
        let (a, b) = trio();
        let mut ans = [0u8; icmp::MAX_ANSWER_LEN];
        for (src, dst, to) in [
            // From A's subnet and from A's block, to B's blocks.
            ("10.50.18.5", "203.0.113.20", "198.18.0.2"),
            ("203.0.113.5", "198.51.100.40", "198.18.0.2"),
            ("203.0.113.5", "203.0.113.33", "198.18.0.3"),
            // From A's block to B's subnet.
            ("203.0.113.5", "10.50.7.9", "198.18.0.2"),
        ] {
            let mut pkt = build(ip(src), ip(dst), 64, 17, &[], b"hello");
            let v = from_tun(&a, &mut pkt, &mut ans);
            assert_eq!(
                v,
                TunVerdict::Send(SocketAddrV4::new(ip(to), 8285)),
                "{dst}"
            );
            assert_eq!(packet::parse(&pkt).unwrap().ttl, 63);
            if to == "198.18.0.2" {
                assert_eq!(
                    from_udp(&b, ip("198.18.0.1"), &pkt),
                    Ok(()),
                    "{src} -> {dst}"
                );
            }
        }
        // Outside the Network and every block: not ours, not answered.
        let mut pkt = build(ip("10.50.18.5"), ip("203.0.113.48"), 64, 17, &[], b"x");
        assert_eq!(
            from_tun(&a, &mut pkt, &mut ans),
            TunVerdict::Drop {
                reason: DropReason::NoRoute,
                answer: None
            }
        );
        // TTL runs out on the way to a block: answered like any other.
        let mut pkt = build(ip("10.50.18.5"), ip("203.0.113.20"), 1, 17, &[], b"x");
        assert!(matches!(
            from_tun(&a, &mut pkt, &mut ans),
            TunVerdict::Drop {
                reason: DropReason::TtlExceeded,
                answer: Some(_)
            }
        ));
    }

    #[test]
    fn a_pod_in_a_local_block_gets_icmp_answers() {
        let (a, _) = trio();
        let mut ans = [0u8; icmp::MAX_ANSWER_LEN];
        let mut pkt = build(
            ip("203.0.113.5"),
            ip("10.50.99.1"),
            64,
            17,
            &[],
            b"12345678",
        );
        let TunVerdict::Drop {
            reason: DropReason::Unleased,
            answer: Some(n),
        } = from_tun(&a, &mut pkt, &mut ans)
        else {
            panic!("expected an answered drop");
        };
        let info = packet::parse(&ans[..n]).unwrap();
        assert_eq!((info.src, info.dst), (ip("10.50.18.0"), ip("203.0.113.5")));
    }

    #[test]
    fn receive_check_with_blocks() {
        let (_, b) = trio();
        let from_a = |src: &str, dst: &str| {
            let p = build(ip(src), ip(dst), 63, 17, &[], b"x");
            from_udp(&b, ip("198.18.0.1"), &p)
        };
        // A's subnet or block, to B's subnet or either of B's blocks.
        for src in ["10.50.18.5", "203.0.113.1", "203.0.113.15"] {
            for dst in ["10.50.7.9", "203.0.113.16", "203.0.113.31", "198.51.100.63"] {
                assert_eq!(from_a(src, dst), Ok(()), "{src} -> {dst}");
            }
        }
        // A source in another peer's (C's) block, in B's own block, in a
        // block nobody holds, or outside everything: spoofed.
        for src in [
            "203.0.113.33",
            "203.0.113.20",
            "203.0.113.48",
            "192.0.2.1",
            "10.50.9.1",
        ] {
            assert_eq!(
                from_a(src, "203.0.113.20"),
                Err(DropReason::SpoofedSource),
                "{src}"
            );
        }
        // To a block B does not hold (A's, C's, nobody's) or elsewhere.
        for dst in [
            "203.0.113.1",
            "203.0.113.33",
            "203.0.113.48",
            "198.51.100.64",
        ] {
            assert_eq!(
                from_a("203.0.113.1", dst),
                Err(DropReason::WrongDestination),
                "{dst}"
            );
        }
        // A stranger is a stranger, blocks or not.
        let p = build(ip("203.0.113.1"), ip("203.0.113.20"), 63, 17, &[], b"x");
        assert_eq!(
            from_udp(&b, ip("198.18.0.99"), &p),
            Err(DropReason::UnknownSender)
        );
    }

    /// Random and mutated packets through both directions: nothing panics, a
    /// forwarded packet is still valid with its TTL one lower, and every ICMP
    /// answer is a valid packet addressed to the offender's source.
    #[test]
    fn random_and_mutated_packets_never_break_the_checks() {
        let (a, b) = pair();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut ans = [0u8; icmp::MAX_ANSWER_LEN];
        let dsts = ["10.50.7.9", "10.50.99.1", "8.8.8.8", "10.50.255.255"];
        for i in 0..50_000u32 {
            let dst = ip(dsts[i as usize % dsts.len()]);
            let len = (rnd() % 80) as usize;
            let payload: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            let opts: Vec<u8> = (0..(rnd() % 3) * 4).map(|_| rnd() as u8).collect();
            let mut pkt = build(
                ip("10.50.18.5"),
                dst,
                (rnd() % 4) as u8,
                (rnd() % 3) as u8,
                &opts,
                &payload,
            );
            // Mutate some of them anywhere, header included.
            if i % 3 == 0 && !pkt.is_empty() {
                let at = rnd() as usize % pkt.len();
                pkt[at] ^= 1 << (rnd() % 8);
            }
            if i % 7 == 0 {
                pkt.truncate(rnd() as usize % (pkt.len() + 1));
            }
            let before = packet::parse(&pkt).ok();
            match from_tun(&a, &mut pkt, &mut ans) {
                TunVerdict::Send(_) => {
                    let after = packet::parse(&pkt).expect("still valid");
                    assert_eq!(after.ttl + 1, before.unwrap().ttl);
                    let _ = from_udp(&b, ip("198.18.0.1"), &pkt);
                }
                TunVerdict::Drop {
                    answer: Some(n), ..
                } => {
                    let info = packet::parse(&ans[..n]).expect("answer is valid");
                    assert_eq!(info.dst, before.unwrap().src);
                    assert_eq!(packet::checksum(&ans[20..n]), 0);
                }
                TunVerdict::Drop { answer: None, .. } => {}
            }
            let _ = from_udp(&b, ip("198.18.0.1"), &pkt);
        }
    }
}
