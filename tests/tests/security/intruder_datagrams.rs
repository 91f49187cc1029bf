//! 10^5 crafted datagrams per kind, as fast as one socket sends them, at a
//! host's udp port: from a machine that holds no lease, from a member with
//! inner sources outside its subnet, and from a member with broken inner
//! packets. Not one reaches the TUN device or the pod, and every datagram is
//! accounted for: counted by the dataplane under its reason, or dropped by
//! the kernel because the socket buffer was full (RcvbufErrors).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kolach_testkit::traffic::flood::{flood, udp_counters, UdpCounters};
use kolach_testkit::traffic::packet::UdpPacket;
use kolach_testkit::{lab::topology, query, run, traffic, Lab};

const COUNT: u64 = 100_000;
const UDP_PORT: u16 = 8285;
const POD_PORT: u16 = 5555;

fn inner(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Vec<u8> {
    UdpPacket {
        src,
        dst,
        src_port: 40000,
        dst_port: POD_PORT,
        ttl: 64,
        id,
        payload: b"intruder",
    }
    .build()
}

/// Broken inner packets: bad header checksum, truncated, a total length
/// that lies, IPv6, empty.
fn malformed(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<Vec<u8>> {
    let good = inner(src, dst, 1);
    let mut bad_sum = good.clone();
    bad_sum[10] ^= 0x55;
    let truncated = good[..good.len() - 3].to_vec();
    let mut lying = good.clone();
    lying[3] = lying[3].wrapping_add(40);
    let mut v6 = vec![0x60u8];
    v6.extend_from_slice(&[0; 47]);
    vec![bad_sum, truncated, lying, v6, vec![]]
}

/// Floods host1 from `ns`/`from` and waits until every datagram is either
/// counted under `reason` or dropped by the kernel; checks nothing else moved.
fn attack(
    lab: &Lab,
    what: &str,
    ns: &str,
    from: Ipv4Addr,
    payloads: &[Vec<u8>],
    reason: &str,
) -> Result<()> {
    let h1 = lab.host(1).ns.clone();
    let before = lab.dp_status(1)?;
    let k_before = udp_counters(&h1)?;
    let to = SocketAddrV4::new(topology::host_ip(1), UDP_PORT);
    let f = flood(ns, SocketAddrV4::new(from, 0), to, payloads, COUNT)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (now, k): (_, UdpCounters) = loop {
        let now = lab.dp_status(1)?;
        let k = udp_counters(&h1)?.since(&k_before);
        let counted = query::dropped(&now, reason) - query::dropped(&before, reason);
        if counted + k.rcvbuf_errors >= COUNT {
            break (now, k);
        }
        if Instant::now() >= deadline {
            bail!(
                "{what}: after 20 s only {counted} counted as {reason} and {} dropped by the kernel of {COUNT}; kernel {k:?}; drops {:?}",
                k.rcvbuf_errors,
                query::dropped_all(&now)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let counted = query::dropped(&now, reason) - query::dropped(&before, reason);
    eprintln!(
        "{what}: {COUNT} sent at {:.0}/s; dataplane read {} and counted {counted} as {reason:?}; kernel dropped {} (socket buffer full)",
        f.rate(),
        k.in_datagrams,
        k.rcvbuf_errors
    );
    ensure!(
        counted == k.in_datagrams,
        "{what}: the dataplane read {} datagrams but counted {counted} as {reason}",
        k.in_datagrams
    );
    ensure!(
        counted + k.rcvbuf_errors == COUNT,
        "{what}: {counted} counted + {} kernel drops != {COUNT} sent",
        k.rcvbuf_errors
    );
    ensure!(
        query::tun_tx(&now) == query::tun_tx(&before),
        "{what}: tun_tx_packets {} -> {}",
        query::tun_tx(&before),
        query::tun_tx(&now)
    );
    for (r, n) in query::dropped_all(&now) {
        if r != reason {
            ensure!(
                n == query::dropped(&before, &r),
                "{what}: dropped[{r}] moved too"
            );
        }
    }
    Ok(())
}

#[test]
fn crafted_datagrams_never_reach_the_tun_and_are_counted() {
    run("flood", |lab| {
        lab.mesh(2)?;
        let outsider = lab.add_outsider("1", 200)?;
        let (pod1, pod2) = (lab.pod(1).clone(), lab.pod(2).clone());
        let rx = traffic::udp_bind_in(&pod1.ns, SocketAddrV4::new(pod1.ip, POD_PORT))?;
        let h2 = lab.host(2).ns.clone();
        let h2_ip = topology::host_ip(2);

        // A stranger with packets that would be fine from a member.
        let from_stranger: Vec<Vec<u8>> = (0..64).map(|i| inner(pod2.ip, pod1.ip, i)).collect();
        attack(
            lab,
            "non-member",
            &outsider,
            topology::host_ip(200),
            &from_stranger,
            "unknown-sender",
        )?;

        // A member sending as addresses it does not hold.
        let spoofs: Vec<Vec<u8>> = (2u8..=254)
            .map(|c| Ipv4Addr::new(10, 50, c, 9))
            .filter(|a| !pod1.subnet.contains(a) && !pod2.subnet.contains(a))
            .take(64)
            .enumerate()
            .map(|(i, a)| inner(a, pod1.ip, i as u16))
            .collect();
        attack(
            lab,
            "spoofed inner source",
            &h2,
            h2_ip,
            &spoofs,
            "spoofed-source",
        )?;

        // A member sending broken packets.
        attack(
            lab,
            "malformed inner packet",
            &h2,
            h2_ip,
            &malformed(pod2.ip, pod1.ip),
            "malformed",
        )?;

        if let Some((got, from)) = traffic::recv_within(&rx, Duration::from_millis(300))? {
            bail!(
                "pod1 received {:?} from {from}",
                String::from_utf8_lossy(&got)
            );
        }
        // The real path still works.
        lab.assert_all_pairs_ping(3)
            .context("pods after the floods")
    });
}
