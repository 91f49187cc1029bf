//! Traffic between namespaces: ping, and UDP sockets opened inside a namespace
//! to send hand-made datagrams or to prove that something arrived.
//!
//! Beside it: [`background`] (helper commands beside a test), [`steady_ping`]
//! (a fast ping with every lost probe), [`iperf`] (an iperf3 flow and its
//! report), [`packet`] and [`pcap`] (hand-built IPv4/UDP packets, reading
//! `tcpdump -w` captures), [`flood`] (crafted datagrams at full rate),
//! [`impair`] (a userspace netem on a host's overlay datagrams), [`cutoff`]
//! (nftables cutting a host off from etcd).

pub mod background;
pub mod cutoff;
pub mod flood;
pub mod impair;
pub mod iperf;
pub mod packet;
pub mod pcap;
pub mod steady_ping;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::netns;

/// What `ping` reported.
#[derive(Clone, Debug, PartialEq)]
pub struct PingResult {
    pub transmitted: u32,
    pub received: u32,
    pub avg_rtt_ms: Option<f64>,
    pub output: String,
}

impl PingResult {
    pub fn lossless(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted
    }
}

/// Parses iputils ping's summary lines.
pub fn parse_ping(output: &str) -> PingResult {
    let mut r = PingResult {
        transmitted: 0,
        received: 0,
        avg_rtt_ms: None,
        output: output.to_string(),
    };
    for line in output.lines() {
        if line.contains("packets transmitted") {
            for part in line.split(',') {
                let mut w = part.split_whitespace();
                let (Some(n), Some(what)) = (w.next(), w.next()) else {
                    continue;
                };
                match what {
                    "packets" => r.transmitted = n.parse().unwrap_or(0),
                    "received" => r.received = n.parse().unwrap_or(0),
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("rtt min/avg/max/mdev = ") {
            r.avg_rtt_ms = rest.split('/').nth(1).and_then(|s| s.parse().ok());
        }
    }
    r
}

/// `ping -c count -i 0.2 -W wait_s` from inside `ns`.
pub fn ping(ns: &str, to: Ipv4Addr, count: u32, wait_s: f64) -> Result<PingResult> {
    let count_s = count.to_string();
    let wait = format!("{wait_s}");
    let to_s = to.to_string();
    let limit = Duration::from_secs_f64(wait_s + f64::from(count) * 0.2 + 5.0);
    let out = netns::exec(
        ns,
        "ping",
        &["-n", "-q", "-c", &count_s, "-i", "0.2", "-W", &wait, &to_s],
        limit,
    )?;
    Ok(parse_ping(&format!("{}{}", out.stdout, out.stderr)))
}

/// Pings once at a time (each waiting `per_try_s`) until a reply or `deadline`;
/// returns when the first reply came, or the last result on failure.
pub fn ping_until(
    ns: &str,
    to: Ipv4Addr,
    deadline: Instant,
    per_try_s: f64,
) -> std::result::Result<Instant, PingResult> {
    loop {
        let r = ping(ns, to, 1, per_try_s).unwrap_or_else(|e| parse_ping(&format!("{e:#}")));
        if r.received > 0 {
            return Ok(Instant::now());
        }
        if Instant::now() >= deadline {
            return Err(r);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens a UDP socket bound to `bind` inside `ns`.
pub fn udp_bind_in(ns: &str, bind: SocketAddrV4) -> Result<UdpSocket> {
    netns::within(ns, || {
        UdpSocket::bind(bind).with_context(|| format!("binding UDP {bind}"))
    })
}

/// Sends one datagram from `bind` (inside `ns`) to `to`.
pub fn udp_send_from(ns: &str, bind: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> Result<()> {
    let sock = udp_bind_in(ns, bind)?;
    let n = sock
        .send_to(payload, to)
        .with_context(|| format!("sending {} bytes {bind} -> {to}", payload.len()))?;
    anyhow::ensure!(n == payload.len(), "short send: {n} of {}", payload.len());
    Ok(())
}

/// Sets `sock`'s receive buffer to `bytes`, past net.core.rmem_max
/// (SO_RCVBUFFORCE, as root).
pub fn force_rcvbuf(sock: &UdpSocket, bytes: libc::c_int) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt reads one c_int that lives for the call.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    anyhow::ensure!(
        r == 0,
        "SO_RCVBUFFORCE: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Waits up to `timeout` for one datagram.
pub fn recv_within(sock: &UdpSocket, timeout: Duration) -> Result<Option<(Vec<u8>, SocketAddr)>> {
    sock.set_read_timeout(Some(timeout))?;
    let mut buf = vec![0u8; 65536];
    match sock.recv_from(&mut buf) {
        Ok((n, from)) => {
            buf.truncate(n);
            Ok(Some((buf, from)))
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_success_and_loss() {
        let ok = "PING 10.50.7.2 (10.50.7.2) 56(84) bytes of data.\n\n\
                  --- 10.50.7.2 ping statistics ---\n\
                  3 packets transmitted, 3 received, 0% packet loss, time 402ms\n\
                  rtt min/avg/max/mdev = 0.051/0.083/0.120/0.028 ms\n";
        let r = parse_ping(ok);
        assert_eq!((r.transmitted, r.received), (3, 3));
        assert!(r.lossless());
        assert_eq!(r.avg_rtt_ms, Some(0.083));
        let lost = "3 packets transmitted, 1 received, +2 errors, 66.6667% packet loss, time 2ms\n";
        let r = parse_ping(lost);
        assert_eq!((r.transmitted, r.received), (3, 1));
        assert!(!r.lossless());
        assert!(!parse_ping("connect: Network is unreachable").lossless());
    }

    #[test]
    fn loopback_udp_roundtrip_outside_any_namespace() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        let got = recv_within(&rx, Duration::from_secs(2)).unwrap().unwrap();
        assert_eq!(got.0, b"x");
        assert!(recv_within(&rx, Duration::from_millis(20))
            .unwrap()
            .is_none());
    }
}
