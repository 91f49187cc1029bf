//! flannel's udp wire format from the outside: a hand-built IPv4 packet in a UDP
//! datagram from a member is delivered to the pod; one from a non-member
//! address, with an inner source outside the sender's subnet, or with an inner
//! destination outside the receiver's subnet, is dropped and counted by reason.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kolach_testkit::traffic::packet::UdpPacket;
use kolach_testkit::{lab::topology, query, run, traffic, Lab};

/// flannel's udp port (Backend.Port default).
const UDP_PORT: u16 = 8285;
/// Where the pod listens.
const POD_PORT: u16 = 5555;

fn inner(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    UdpPacket {
        src,
        dst,
        src_port: 40000,
        dst_port: POD_PORT,
        ttl: 64,
        id: 7,
        payload,
    }
    .build()
}

/// Sends `packet` as a UDP datagram from `from` (inside `ns`) to host1's udp port.
fn send_to_host1(ns: &str, from: Ipv4Addr, packet: &[u8]) -> Result<()> {
    traffic::udp_send_from(
        ns,
        SocketAddrV4::new(from, 0),
        SocketAddrV4::new(topology::host_ip(1), UDP_PORT),
        packet,
    )
}

#[test]
fn raw_ipv4_packet_from_member_is_delivered() {
    run("rawpkt", |lab| {
        lab.mesh(2)?;
        let (pod1, pod2) = (lab.pod(1).clone(), lab.pod(2).clone());
        let rx = traffic::udp_bind_in(&pod1.ns, SocketAddrV4::new(pod1.ip, POD_PORT))?;
        let before = query::tun_tx(&lab.dp_status(1)?);
        let payload = b"flannel udp wire format: just the inner IPv4 packet";
        let packet = inner(pod2.ip, pod1.ip, payload);
        send_to_host1(&lab.host(2).ns, topology::host_ip(2), &packet)?;

        let (got, from) = traffic::recv_within(&rx, Duration::from_secs(2))?
            .context("the pod received nothing within 2s")?;
        ensure!(
            got == payload,
            "payload {:?}",
            String::from_utf8_lossy(&got)
        );
        ensure!(
            from.ip() == IpAddr::V4(pod2.ip) && from.port() == 40000,
            "delivered from {from}, sent from {}:40000",
            pod2.ip
        );
        // The packet loop counts a write after it returned: the pod may
        // have the packet a moment before the counter moves.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let after = query::tun_tx(&lab.dp_status(1)?);
            if after > before {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "tun_tx_packets {before} -> {after}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

#[test]
fn datagrams_from_strangers_and_spoofers_are_dropped_and_counted() {
    run("drops", |lab| {
        lab.mesh(2)?;
        let intruder = lab.add_outsider("1", 200)?;
        let (pod1, pod2) = (lab.pod(1).clone(), lab.pod(2).clone());
        let rx = traffic::udp_bind_in(&pod1.ns, SocketAddrV4::new(pod1.ip, POD_PORT))?;

        // A well-formed packet, but from an address that holds no lease.
        let packet = inner(pod2.ip, pod1.ip, b"from a stranger");
        expect_drop(lab, "unknown-sender", || {
            send_to_host1(&intruder, topology::host_ip(200), &packet)
        })?;

        // From host2's underlay address, with an inner source host2 does not own.
        let spoofed = spoofed_source(lab)?;
        let packet = inner(spoofed, pod1.ip, b"spoofed inner source");
        expect_drop(lab, "spoofed-source", || {
            send_to_host1(&lab.host(2).ns, topology::host_ip(2), &packet)
        })?;

        // From a member, its own source, but not for host1's subnet: host1
        // must not forward it (to its underlay address, or another subnet).
        for dst in [topology::host_ip(1), spoofed_source(lab)?] {
            let packet = inner(pod2.ip, dst, b"relay me");
            expect_drop(lab, "wrong-destination", || {
                send_to_host1(&lab.host(2).ns, topology::host_ip(2), &packet)
            })?;
        }

        if let Some((got, from)) = traffic::recv_within(&rx, Duration::from_millis(300))? {
            bail!(
                "pod1 received a datagram that should have been dropped: {:?} from {from}",
                String::from_utf8_lossy(&got)
            );
        }
        // The checks did not break the real path.
        lab.assert_all_pairs_ping(2)
    });
}

/// An address inside the overlay but outside both hosts' subnets.
fn spoofed_source(lab: &Lab) -> Result<Ipv4Addr> {
    let taken = [lab.pod(1).subnet, lab.pod(2).subnet];
    (2u8..=254)
        .map(|c| Ipv4Addr::new(10, 50, c, 9))
        .find(|a| !taken.iter().any(|s| s.contains(a)))
        .context("no spare overlay address")
}

/// Runs `send` and waits up to 2 s for host1's `reason` drop counter to grow,
/// checking that nothing reached its TUN device meanwhile.
fn expect_drop(lab: &Lab, reason: &str, send: impl FnOnce() -> Result<()>) -> Result<()> {
    let before = lab.dp_status(1)?;
    send()?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = lab.dp_status(1)?;
        if query::dropped(&now, reason) > query::dropped(&before, reason) {
            ensure!(
                query::tun_tx(&now) == query::tun_tx(&before),
                "{reason}: tun_tx_packets grew {} -> {}",
                query::tun_tx(&before),
                query::tun_tx(&now)
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "dropped[{reason:?}] did not grow within 2s: before {:?}, now {:?}, tun_tx {} -> {}",
                query::dropped_all(&before),
                query::dropped_all(&now),
                query::tun_tx(&before),
                query::tun_tx(&now)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
