//! Two udp backends in two namespaces joined by a veth pair: a packet sent
//! into one TUN comes out of the other, to and from pool blocks (DESIGN §10)
//! too, through the routes the backend gives peers' blocks; datagrams from a
//! non-member, with a spoofed inner source (another peer's block included)
//! or to an address this host does not hold are dropped and counted.

mod common;

use std::net::UdpSocket;
use std::sync::Arc;

use common::{eventually, kolach_routes, udp_snapshot, with_blocks, Netns, NsRuntime, TempDir};
use kolach_dataplaned::engine::{Engine, Origin};
use kolach_dataplaned::kernel::{Kernel, RtNetlink};
use kolach_proto::dataplane as pb;

struct Host {
    engine: Arc<Engine>,
    rt: NsRuntime,
    _dir: TempDir,
}

impl Host {
    fn start(ns: &Netns, tag: &str, snap: pb::Snapshot) -> Host {
        let rt = ns.runtime();
        let dir = TempDir::new(tag);
        let d = dir.0.clone();
        let engine = rt.run(async move {
            let k: Arc<dyn Kernel> = Arc::new(RtNetlink::connect().unwrap());
            Arc::new(Engine::new(
                d,
                "kolach0".into(),
                k,
                Arc::new(kolach_dataplaned::firewall::System),
            ))
        });
        let e = engine.clone();
        let r = rt.run(async move { e.apply(snap, Origin::Controld).await });
        assert!(r.applied, "{tag}: {}", r.reason);
        Host {
            engine,
            rt,
            _dir: dir,
        }
    }

    fn counters(&self) -> pb::Counters {
        self.engine.status().counters.unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let e = self.engine.clone();
        self.rt.run(async move { e.shutdown().await });
    }
}

/// An IPv4/UDP packet with a valid header checksum.
fn inner_packet(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let mut sum: u32 = p[..20]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p
}

#[test]
fn two_hosts_forward_and_drop_strangers() {
    let a_ns = Netns::new("e2e-a");
    let b_ns = Netns::new("e2e-b");
    a_ns.ip(&[
        "link", "add", "v0", "type", "veth", "peer", "name", "v0", "netns", &b_ns.name,
    ]);
    a_ns.ip(&["addr", "add", "198.18.0.1/24", "dev", "v0"]);
    b_ns.ip(&["addr", "add", "198.18.0.2/24", "dev", "v0"]);
    // A non-member address on B's side of the wire.
    b_ns.ip(&["addr", "add", "198.18.0.99/24", "dev", "v0"]);
    a_ns.ip(&["link", "set", "v0", "up"]);
    b_ns.ip(&["link", "set", "v0", "up"]);

    // Pool blocks: A holds 203.0.113.0/28, B 203.0.113.16/28, and C (a
    // peer of A's with no host behind it) 203.0.113.32/28. A pod address in
    // each of A's and B's.
    let a = Host::start(
        &a_ns,
        "e2e-a-run",
        with_blocks(
            udp_snapshot(
                1,
                "10.50.18.0/24",
                "198.18.0.1",
                &[
                    ("10.50.7.0/24", "198.18.0.2"),
                    ("10.50.9.0/24", "198.18.0.3"),
                ],
            ),
            &["203.0.113.0/28"],
            &[&["203.0.113.16/28"], &["203.0.113.32/28"]],
        ),
    );
    let b = Host::start(
        &b_ns,
        "e2e-b-run",
        with_blocks(
            udp_snapshot(
                1,
                "10.50.7.0/24",
                "198.18.0.2",
                &[("10.50.18.0/24", "198.18.0.1")],
            ),
            &["203.0.113.16/28"],
            &[&["203.0.113.0/28"]],
        ),
    );
    a_ns.ip(&["addr", "add", "203.0.113.1/32", "dev", "lo"]);
    b_ns.ip(&["addr", "add", "203.0.113.17/32", "dev", "lo"]);

    // Each peer block outside the Network has its route into the TUN.
    assert_eq!(
        kolach_routes(&a_ns),
        [
            "203.0.113.16/28 via - dev kolach0",
            "203.0.113.32/28 via - dev kolach0"
        ]
    );
    assert_eq!(kolach_routes(&b_ns), ["203.0.113.0/28 via - dev kolach0"]);
    for r in a_ns
        .ip_json(&["route", "show", "proto", "107"])
        .as_array()
        .unwrap()
    {
        assert_eq!(r["scope"], "link", "{r}");
    }

    // A's kernel routes 10.50.7.0 into A's TUN; the echo request comes out of
    // B's TUN, B's kernel answers through B's TUN, and the reply out of A's.
    let out = a_ns.exec(&["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "10.50.7.0"]);
    assert!(
        out.status.success(),
        "ping across failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (ca, cb) = (a.counters(), b.counters());
    assert!(ca.tun_rx_packets >= 3 && ca.udp_tx_packets >= 3, "{ca:?}");
    assert!(cb.udp_rx_packets >= 3 && cb.tun_tx_packets >= 3, "{cb:?}");
    assert!(cb.udp_tx_packets >= 3 && ca.tun_tx_packets >= 3);
    // To a pod in B's block (from A's TUN address), and from a pod in A's
    // block to B: the answers come back to A's subnet and A's block.
    for args in [
        ["-c", "3", "-i", "0.2", "-W", "2", "203.0.113.17"],
        ["-c", "3", "-i", "0.2", "-I", "203.0.113.1", "10.50.7.0"],
    ] {
        let out = a_ns.exec(&[&["ping", "-n"][..], &args[..]].concat());
        assert!(
            out.status.success(),
            "ping {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Only the kernel's own IPv6 chatter on the new link (router/MLD
    // solicitations) may have been dropped.
    assert!(
        ca.dropped.iter().all(|(k, v)| k == "not-ipv4" || *v == 0),
        "{ca:?}"
    );

    // Crafted datagrams sent from B's namespace to A's socket.
    let good_inner = inner_packet([10, 50, 7, 5], [10, 50, 18, 5]);
    let spoofed_inner = inner_packet([10, 50, 99, 5], [10, 50, 18, 5]);
    // B's block to A's block is fine; C's block is not B's to use; B's
    // block is not A's to receive for.
    let block_to_block = inner_packet([203, 0, 113, 20], [203, 0, 113, 5]);
    let from_cs_block = inner_packet([203, 0, 113, 33], [203, 0, 113, 5]);
    let to_bs_block = inner_packet([10, 50, 7, 5], [203, 0, 113, 20]);
    let before = a.counters();
    b.rt.run(async move {
        let stranger = UdpSocket::bind("198.18.0.99:0").unwrap();
        stranger.send_to(&good_inner, "198.18.0.1:8285").unwrap();
        let member = UdpSocket::bind("198.18.0.2:0").unwrap();
        member.send_to(&spoofed_inner, "198.18.0.1:8285").unwrap();
        member
            .send_to(b"\x45not a packet", "198.18.0.1:8285")
            .unwrap();
        for p in [block_to_block, from_cs_block, to_bs_block] {
            member.send_to(&p, "198.18.0.1:8285").unwrap();
        }
    });
    eventually("drops counted on A", || {
        let c = a.counters();
        c.dropped["unknown-sender"] == 1
            && c.dropped["spoofed-source"] == 2
            && c.dropped["malformed"] == 1
            && c.dropped["wrong-destination"] == 1
            && c.tun_tx_packets > before.tun_tx_packets
    });

    // A route change swaps the table under the running loop: with B's lease
    // gone from A's snapshot, A answers net unreachable instead of sending.
    let e = a.engine.clone();
    let r = a.rt.run(async move {
        e.apply(
            udp_snapshot(2, "10.50.18.0/24", "198.18.0.1", &[]),
            Origin::Controld,
        )
        .await
    });
    assert!(r.applied);
    // B's block went with B's lease, C's with C's: no route of kolach's left.
    assert!(kolach_routes(&a_ns).is_empty());
    let sent_before = a.counters().udp_tx_packets;
    let out = a_ns.exec(&["ping", "-n", "-c", "1", "-W", "2", "10.50.7.0"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Destination Net Unreachable"));
    assert_eq!(a.counters().udp_tx_packets, sent_before);
}
