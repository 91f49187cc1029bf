//! The udp fast path (issue 5) from the outside: TCP read from the TUN as
//! TSO super-packets, cut into segments in userspace, sent with UDP GSO and
//! received with UDP GRO must still be flannel's wire format on the underlay
//! (every datagram one inner IPv4 packet of at most the overlay MTU, with
//! correct IPv4 and TCP checksums); and a host running without offloads
//! (`KOLACH_OFFLOAD=off`) talks to hosts running with them.
//!
//! On a veth underlay a UDP GSO skb crosses the pair unsegmented, so the
//! wire would show one big datagram per send: the test turns the hosts'
//! `tx-udp-segmentation` off (ethtool), which makes the kernel cut the
//! datagrams in software before the veth, as a NIC would on real hardware.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kolach_proto::dataplane::{Counters, DataplaneStatus};
use kolach_testkit::lab::mesh::CONVERGE_WITHIN;
use kolach_testkit::lab::{default_udp_mode, NETWORK_CONFIG};
use kolach_testkit::traffic::background::Background;
use kolach_testkit::traffic::iperf::{Iperf, IperfResult};
use kolach_testkit::{lab::topology, netns, run, traffic, traffic::packet, traffic::pcap, Lab};

const UDP_PORT: u16 = 8285;
/// The packet I/O of the status mode (the default queues follow it).
const OFFLOAD_MODE: &str = "offload (tun-tso, tun-uso, udp-gso, udp-gro)";
const BATCH_MODE: &str = "batch (sendmmsg, recvmmsg)";
/// How long each iperf3 flow runs.
const SECONDS: u32 = 3;
/// tcpdump stops by itself after this many frames (about 30 MB of capture).
const CAPTURE_FRAMES: u32 = 20_000;

#[test]
fn tcp_over_the_fast_path_is_flannel_wire_format_on_the_wire() {
    run("fastwire", |lab| {
        lab.mesh(2)?;
        for n in [1, 2] {
            lab.wait_dp_mode(n, &default_udp_mode(OFFLOAD_MODE))?;
        }
        let mtu = lab.host(1).subnet_env().context("host1 subnet.env")?.mtu;
        let status_mtu = lab.dp_status(1)?.mtu;
        ensure!(
            status_mtu == mtu,
            "dataplane status mtu {status_mtu} != KOLACH_MTU {mtu}"
        );
        // Pods get KOLACH_MTU as Docker's --mtu gives it, so TCP starts with
        // the right MSS (no "need to frag" and retransmits first).
        for n in [1, 2] {
            let link = netns::ip(&lab.pod(n).ns, &["-j", "link", "show", "dev", "eth0"])?;
            ensure!(
                link.contains(&format!("\"mtu\":{mtu},")),
                "pod{n} eth0 is not at KOLACH_MTU {mtu}: {link}"
            );
        }
        // Both ways: host2's ACKs leave with UDP GSO too, and the capture
        // on host2's eth0 sees its egress before a NIC would cut it.
        for n in [1, 2] {
            udp_segmentation_off(&lab.host(n).ns)?;
        }

        let file = lab.dir.join("host2-eth0.pcap");
        let dump = Capture::start(&lab.host(2).ns, &file)?;
        let before = [lab.dp_status(1)?, lab.dp_status(2)?];
        let r = tcp_flow(lab, 1, 2, &[])?;
        let after = [lab.dp_status(1)?, lab.dp_status(2)?];
        let tcpdump = dump.stop()?;
        eprintln!("iperf3 pod1 -> pod2: {}", r.describe());
        eprintln!(
            "tcpdump on host2 eth0: {}",
            tcpdump.trim().replace('\n', "; ")
        );
        check_flow(&r)?;

        let d1 = delta(&before[0], &after[0]);
        let d2 = delta(&before[1], &after[1]);
        eprintln!("host1 during the flow: {}", describe(&d1));
        eprintln!("host2 during the flow: {}", describe(&d2));

        let wire = check_wire(lab, &file, mtu)?;
        eprintln!("{wire}");
        ensure!(
            wire.from_host1 >= 2000,
            "only {} datagrams from host1 captured: {wire}",
            wire.from_host1
        );
        ensure!(
            wire.full_size > 0,
            "no datagram from host1 carried an MTU-sized ({mtu}) segment: {wire}"
        );

        // TSO: one TUN read on host1 became many datagrams.
        ensure!(
            d1.tun_rx_packets > 0 && d1.udp_tx_packets >= 2 * d1.tun_rx_packets,
            "host1 sent {} datagrams for {} TUN reads: super-packets were not cut into segments",
            d1.udp_tx_packets,
            d1.tun_rx_packets
        );
        // GRO and coalescing: host2 wrote far fewer packets to its TUN than it received.
        ensure!(
            d2.tun_tx_packets > 0 && d2.udp_rx_packets >= 2 * d2.tun_tx_packets,
            "host2 wrote {} TUN packets for {} datagrams received: segments were not coalesced",
            d2.tun_tx_packets,
            d2.udp_rx_packets
        );
        Ok(())
    });
}

#[test]
fn offload_off_and_mixed_hosts_interoperate() {
    run("fastmix", |lab| {
        lab.start_etcd()?;
        lab.put_config(NETWORK_CONFIG)?;
        for _ in 0..3 {
            lab.add_host()?;
        }
        lab.host_mut(3)
            .dataplaned
            .env
            .push(("KOLACH_OFFLOAD".into(), "off".into()));
        for n in lab.host_ids() {
            lab.start_host(n)?;
        }
        for n in lab.host_ids() {
            lab.wait_ready(n)?;
            lab.add_pod(n)?;
        }
        lab.wait_converged(CONVERGE_WITHIN)?;
        lab.wait_dp_mode(1, &default_udp_mode(OFFLOAD_MODE))?;
        lab.wait_dp_mode(2, &default_udp_mode(OFFLOAD_MODE))?;
        lab.wait_dp_mode(3, &default_udp_mode(BATCH_MODE))?;

        lab.assert_all_pairs_ping(3)?;

        for (client, server) in [(1u8, 3u8), (3, 1)] {
            let before = [lab.dp_status(client)?, lab.dp_status(server)?];
            let r = tcp_flow(lab, client, server, &[])?;
            let after = [lab.dp_status(client)?, lab.dp_status(server)?];
            let (dc, ds) = (delta(&before[0], &after[0]), delta(&before[1], &after[1]));
            eprintln!("iperf3 pod{client} -> pod{server}: {}", r.describe());
            eprintln!("  host{client} (sender): {}", describe(&dc));
            eprintln!("  host{server} (receiver): {}", describe(&ds));
            check_flow(&r).with_context(|| format!("pod{client} -> pod{server}"))?;
            // Without offloads every TUN read is one packet and every
            // accepted datagram one TUN write.
            let batch = if client == 3 { &dc } else { &ds };
            let drops: u64 = batch.dropped.values().sum();
            ensure!(
                batch.udp_tx_packets <= batch.tun_rx_packets
                    && batch.udp_rx_packets <= batch.tun_tx_packets + drops,
                "host3 (offload off) cut or coalesced packets: {}",
                describe(batch)
            );
        }
        // Still a mesh after the bulk traffic.
        lab.assert_all_pairs_ping(2)
    });
}

/// The underlay's MTU shrinks under a running host (a tunnel, a VPN): the
/// kernel refuses `UDP_SEGMENT` sends whose datagrams no longer fit (EINVAL),
/// and the dataplane resends those datagrams one by one (the kernel then
/// fragments them), so TCP goes on and nothing is dropped.
#[test]
fn gso_sends_the_kernel_refuses_go_out_one_by_one() {
    run("fastnogso", |lab| {
        lab.mesh(2)?;
        lab.wait_dp_mode(1, &default_udp_mode(OFFLOAD_MODE))?;
        let ns = lab.host(1).ns.clone();
        netns::ip(&ns, &["link", "set", "dev", topology::ETH, "mtu", "1400"])?;
        let before = lab.dp_status(1)?;
        let r = tcp_flow(lab, 1, 2, &[])?;
        eprintln!(
            "iperf3 pod1 -> pod2, host1's underlay MTU 1400 < 1472 + 28: {}",
            r.describe()
        );
        check_flow(&r)?;
        let d = delta(&before, &lab.dp_status(1)?);
        eprintln!("  host1: {}", describe(&d));
        ensure!(
            d.dropped.get("io-error").copied().unwrap_or(0) == 0,
            "refused GSO sends must be resent, not dropped: {}",
            describe(&d)
        );
        ensure!(
            d.udp_tx_packets > d.tun_rx_packets,
            "TSO reads are still cut in userspace: {}",
            describe(&d)
        );
        lab.assert_all_pairs_ping(3)
    });
}

/// Bursts of equal-size UDP datagrams from pod1 to pod2: host2 writes runs
/// of them to its TUN as one super-packet (TUN USO) and the pod's socket
/// still gets every datagram whole and in order.
#[test]
fn udp_datagrams_of_a_flow_are_coalesced_and_arrive_intact() {
    const BURSTS: u32 = 40;
    const PER_BURST: u32 = 50;
    const LEN: usize = 1000;
    run("fastudp", |lab| {
        lab.mesh(2)?;
        lab.wait_dp_mode(2, &default_udp_mode(OFFLOAD_MODE))?;
        let to = SocketAddrV4::new(lab.pod(2).ip, 7000);
        let rx = traffic::udp_bind_in(&lab.pod(2).ns, to)?;
        // Room for a whole burst in the pod's socket.
        traffic::force_rcvbuf(&rx, 4 << 20)?;
        let tx = traffic::udp_bind_in(&lab.pod(1).ns, SocketAddrV4::new(lab.pod(1).ip, 7001))?;
        let datagram = |seq: u32| -> Vec<u8> {
            let mut d: Vec<u8> = (0..LEN).map(|i| (i as u32 * 7 + seq) as u8).collect();
            d[..4].copy_from_slice(&seq.to_be_bytes());
            d
        };
        let before = lab.dp_status(2)?;
        let mut got = Vec::new();
        for b in 0..BURSTS {
            for i in 0..PER_BURST {
                tx.send_to(&datagram(b * PER_BURST + i), to)?;
            }
            while let Some((d, _)) = traffic::recv_within(&rx, Duration::from_millis(300))? {
                let seq = u32::from_be_bytes(d[..4].try_into().expect("4 bytes"));
                ensure!(d == datagram(seq), "datagram {seq} arrived changed");
                got.push(seq);
                if got.len() as u32 == (b + 1) * PER_BURST {
                    break;
                }
            }
        }
        let d = delta(&before, &lab.dp_status(2)?);
        eprintln!(
            "{} of {} datagrams arrived intact; host2: {}",
            got.len(),
            BURSTS * PER_BURST,
            describe(&d)
        );
        let mut sorted = got.clone();
        sorted.sort_unstable();
        ensure!(sorted == got, "datagrams arrived out of order");
        ensure!(
            got.len() as u32 * 10 >= BURSTS * PER_BURST * 9,
            "fewer than 90% arrived"
        );
        // How many join depends on how the bursts are scheduled; at least
        // some must (7 per write here on an idle machine).
        ensure!(
            d.tun_tx_packets < d.udp_rx_packets,
            "host2 wrote {} TUN packets for {} datagrams: none coalesced",
            d.tun_tx_packets,
            d.udp_rx_packets
        );
        Ok(())
    });
}

/// A small MSS makes super-packets of ~120 segments, so one batch of reads
/// needs more than one send: every segment must still leave with its own
/// bytes (a slot reused too early would send one packet's headers over
/// another's payload: TCP checksum errors at the pod).
#[test]
fn super_packets_of_a_small_mss_are_cut_whole() {
    run("fastmss", |lab| {
        lab.mesh(2)?;
        lab.wait_dp_mode(1, &default_udp_mode(OFFLOAD_MODE))?;
        let errors_before = tcp_csum_errors(&lab.pod(2).ns)?;
        let before = lab.dp_status(1)?;
        let r = tcp_flow(lab, 1, 2, &["-M", "536"])?;
        eprintln!("iperf3 -M 536 pod1 -> pod2: {}", r.describe());
        check_flow(&r)?;
        let d = delta(&before, &lab.dp_status(1)?);
        eprintln!("  host1: {}", describe(&d));
        ensure!(
            d.udp_tx_packets > 20 * d.tun_rx_packets,
            "super-packets of a 536-byte MSS should each make dozens of datagrams: {}",
            describe(&d)
        );
        let errors = tcp_csum_errors(&lab.pod(2).ns)? - errors_before;
        ensure!(errors == 0, "pod2 saw {errors} TCP checksum errors");
        Ok(())
    });
}

/// `Tcp: InCsumErrors` of a namespace (/proc/net/snmp).
fn tcp_csum_errors(ns: &str) -> Result<u64> {
    let snmp = netns::exec_ok(ns, "cat", &["/proc/net/snmp"])?;
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next(), tcp.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no Tcp lines in /proc/net/snmp of {ns}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InCsumErrors")
        .and_then(|(_, v)| v.parse().ok())
        .context("no Tcp InCsumErrors")
}

/// An iperf3 TCP flow of SECONDS from pod `client` to pod `server`.
fn tcp_flow(lab: &Lab, client: u8, server: u8, extra: &[&str]) -> Result<IperfResult> {
    let (srv, cli) = (lab.pod(server), lab.pod(client));
    Iperf::start_with(&srv.ns, &cli.ns, srv.ip, SECONDS, &lab.dir, extra)?.finish()
}

fn check_flow(r: &IperfResult) -> Result<()> {
    ensure!(r.error.is_none(), "iperf3 failed: {:?}", r.error);
    ensure!(
        r.received_bytes > 0,
        "iperf3 moved no data: {}",
        r.describe()
    );
    Ok(())
}

/// Makes the kernel segment UDP GSO sends in software before host `ns`'s
/// underlay veth, so the capture shows the datagrams a NIC would put on the wire.
fn udp_segmentation_off(ns: &str) -> Result<()> {
    let eth = topology::ETH;
    netns::exec_ok(ns, "ethtool", &["-K", eth, "tx-udp-segmentation", "off"])
        .context("is ethtool installed? (`make deps`)")?;
    let features = netns::exec_ok(ns, "ethtool", &["-k", eth])?;
    ensure!(
        features
            .lines()
            .any(|l| l.trim_start().starts_with("tx-udp-segmentation: off")),
        "{ns} {eth} still segments UDP in \"hardware\":\n{features}"
    );
    Ok(())
}

/// tcpdump writing every overlay datagram on a host's underlay interface to a file.
struct Capture {
    tcpdump: Background,
}

impl Capture {
    /// Starts tcpdump in `ns` on eth0 and waits until it listens.
    fn start(ns: &str, file: &Path) -> Result<Capture> {
        let out = file.with_extension("txt");
        let frames = CAPTURE_FRAMES.to_string();
        let filter = format!("udp port {UDP_PORT}");
        let tcpdump = Background::spawn(
            ns,
            "tcpdump",
            &[
                "-i",
                topology::ETH,
                "-n",
                "-s",
                "0",
                "-B",
                "32768",
                "-c",
                &frames,
                "-Z",
                "root",
                "-w",
                &file.to_string_lossy(),
                &filter,
            ],
            &out,
        )?;
        let mut c = Capture { tcpdump };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = c.tcpdump.read()?;
            if text.contains("listening on") {
                return Ok(c);
            }
            if !c.tcpdump.is_running() || Instant::now() >= deadline {
                bail!("tcpdump in {ns} is not capturing:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops tcpdump (if `-c` has not) and returns what it printed (its counts).
    fn stop(self) -> Result<String> {
        self.tcpdump.stop()
    }
}

/// What the capture showed.
#[derive(Debug, Default)]
struct Wire {
    frames: usize,
    from_host1: usize,
    from_host2: usize,
    tcp_with_payload: usize,
    full_size: usize,
    max_inner: usize,
    truncated_file: bool,
}

impl std::fmt::Display for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "captured {} frames: {} datagrams from host1 ({} TCP segments with data, {} of them {} bytes = the MTU), {} from host2{}",
            self.frames,
            self.from_host1,
            self.tcp_with_payload,
            self.full_size,
            self.max_inner,
            self.from_host2,
            if self.truncated_file { "; last record cut off" } else { "" }
        )
    }
}

/// Checks every overlay datagram in the capture: one inner IPv4 packet
/// filling the UDP payload exactly, at most `mtu` bytes, valid IPv4 header
/// checksum, valid TCP/UDP checksum; host1's carry pod1's subnet to pod2's.
fn check_wire(lab: &Lab, file: &Path, mtu: u32) -> Result<Wire> {
    let cap = pcap::read(file)?;
    let (h1, h2) = (lab.host(1).ip, lab.host(2).ip);
    let (sub1, sub2) = (lab.pod(1).subnet, lab.pod(2).subnet);
    let mut w = Wire {
        frames: cap.records.len(),
        truncated_file: cap.truncated,
        ..Wire::default()
    };
    let mut bad: Vec<String> = Vec::new();
    for (i, rec) in cap.records.iter().enumerate() {
        let mut fail = |why: String| {
            if bad.len() < 10 {
                bad.push(format!("frame {}: {why}", i + 1));
            }
        };
        if !rec.complete() {
            fail(format!(
                "captured {} of {} bytes (snap length {})",
                rec.data.len(),
                rec.orig_len,
                cap.snaplen
            ));
            continue;
        }
        let Some(dgram) = cap.ipv4(rec).and_then(pcap::udp_in_ipv4) else {
            fail(format!(
                "not a whole IPv4/UDP datagram (link type {}): {:02x?}",
                cap.linktype,
                &rec.data[..rec.data.len().min(64)]
            ));
            continue;
        };
        if dgram.src == h1 {
            w.from_host1 += 1;
        } else if dgram.src == h2 {
            w.from_host2 += 1;
        } else {
            fail(format!("datagram from {} (neither host)", dgram.src));
            continue;
        }
        if !dgram.ip_header_ok {
            fail("outer IPv4 header checksum".into());
        }
        let inner = dgram.payload;
        if let Err(why) = check_inner(inner, mtu) {
            fail(format!(
                "{} -> {}: {why}; inner starts {:02x?}",
                dgram.src,
                dgram.dst,
                &inner[..inner.len().min(60)]
            ));
            continue;
        }
        let src = Ipv4Addr::new(inner[12], inner[13], inner[14], inner[15]);
        let dst = Ipv4Addr::new(inner[16], inner[17], inner[18], inner[19]);
        if dgram.src == h1 {
            if !(sub1.contains(&src) && sub2.contains(&dst)) {
                fail(format!("from host1: inner {src} -> {dst}"));
            }
            w.max_inner = w.max_inner.max(inner.len());
            if inner.len() == mtu as usize {
                w.full_size += 1;
            }
            let ihl = usize::from(inner[0] & 0x0f) * 4;
            if inner[9] == 6 && inner.len() > ihl + usize::from(inner[ihl + 12] >> 4) * 4 {
                w.tcp_with_payload += 1;
            }
        }
    }
    if !bad.is_empty() {
        bail!(
            "datagrams on the wire that are not flannel's format ({w}):\n{}",
            bad.join("\n")
        );
    }
    Ok(w)
}

/// One inner IPv4 packet that fills the UDP payload exactly.
fn check_inner(p: &[u8], mtu: u32) -> Result<(), String> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return Err(format!("{} bytes, not an IPv4 packet", p.len()));
    }
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if total != p.len() {
        return Err(format!(
            "inner total length {total} != UDP payload {} (more or less than one packet)",
            p.len()
        ));
    }
    if p.len() > mtu as usize {
        return Err(format!("inner packet {} bytes > MTU {mtu}", p.len()));
    }
    if !packet::ipv4_header_ok(p) {
        return Err("inner IPv4 header checksum".into());
    }
    match (p[9], packet::transport_checksum_ok(p)) {
        (6 | 17, Some(true)) => Ok(()),
        (6 | 17, Some(false)) => Err(format!(
            "{} checksum",
            if p[9] == 6 { "TCP" } else { "UDP" }
        )),
        (6 | 17, None) => Err("TCP/UDP segment cut short or fragmented".into()),
        _ => Ok(()),
    }
}

/// Counter growth between two statuses.
fn delta(before: &DataplaneStatus, after: &DataplaneStatus) -> Counters {
    let z = Counters::default();
    let b = before.counters.as_ref().unwrap_or(&z);
    let a = after.counters.as_ref().unwrap_or(&z);
    Counters {
        tun_rx_packets: a.tun_rx_packets - b.tun_rx_packets,
        tun_rx_bytes: a.tun_rx_bytes - b.tun_rx_bytes,
        udp_tx_packets: a.udp_tx_packets - b.udp_tx_packets,
        udp_tx_bytes: a.udp_tx_bytes - b.udp_tx_bytes,
        udp_rx_packets: a.udp_rx_packets - b.udp_rx_packets,
        udp_rx_bytes: a.udp_rx_bytes - b.udp_rx_bytes,
        tun_tx_packets: a.tun_tx_packets - b.tun_tx_packets,
        tun_tx_bytes: a.tun_tx_bytes - b.tun_tx_bytes,
        icmp_unreachable_sent: a.icmp_unreachable_sent - b.icmp_unreachable_sent,
        dropped: a
            .dropped
            .iter()
            .map(|(k, v)| (k.clone(), v - b.dropped.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect(),
    }
}

fn describe(c: &Counters) -> String {
    let ratio = |a: u64, b: u64| a as f64 / b.max(1) as f64;
    format!(
        "tun_rx {} ({:.1} MB), udp_tx {} ({:.1} per TUN read), udp_rx {}, tun_tx {} ({:.1} datagrams per TUN write), drops {:?}",
        c.tun_rx_packets,
        c.tun_rx_bytes as f64 / 1e6,
        c.udp_tx_packets,
        ratio(c.udp_tx_packets, c.tun_rx_packets),
        c.udp_rx_packets,
        c.tun_tx_packets,
        ratio(c.udp_rx_packets, c.tun_tx_packets),
        c.dropped
    )
}
