//! Crafted datagrams at full rate, and the kernel's UDP counters of a
//! namespace, so a test can account for every datagram: read by the
//! dataplane (and so counted by reason), or dropped by the kernel because
//! the socket buffer was full.

use std::net::{SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns;

/// What one flood did.
#[derive(Clone, Copy, Debug)]
pub struct Flood {
    pub sent: u64,
    pub took: Duration,
}

impl Flood {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

/// Sends `count` datagrams from `from` (inside `ns`) to `to` as fast as the
/// socket takes them, cycling through `payloads`. A send that finds the
/// socket's buffer full is retried, so exactly `count` leave.
pub fn flood(
    ns: &str,
    from: SocketAddrV4,
    to: SocketAddrV4,
    payloads: &[Vec<u8>],
    count: u64,
) -> Result<Flood> {
    anyhow::ensure!(!payloads.is_empty(), "nothing to send");
    let sock = netns::within(ns, || {
        UdpSocket::bind(from).with_context(|| format!("binding UDP {from}"))
    })?;
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < count {
        let p = &payloads[(sent % payloads.len() as u64) as usize];
        match sock.send_to(p, to) {
            Ok(_) => sent += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => std::thread::yield_now(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => return Err(e).with_context(|| format!("after {sent} datagrams to {to}")),
        }
    }
    Ok(Flood {
        sent,
        took: start.elapsed(),
    })
}

/// The `Udp:` line of `/proc/net/snmp` inside a namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpCounters {
    /// Datagrams a socket read.
    pub in_datagrams: u64,
    /// Datagrams dropped because the receiving socket's buffer was full.
    pub rcvbuf_errors: u64,
    /// All receive errors (checksum, buffer, ...).
    pub in_errors: u64,
    pub in_csum_errors: u64,
    pub no_ports: u64,
}

impl UdpCounters {
    pub fn since(&self, before: &UdpCounters) -> UdpCounters {
        UdpCounters {
            in_datagrams: self.in_datagrams - before.in_datagrams,
            rcvbuf_errors: self.rcvbuf_errors - before.rcvbuf_errors,
            in_errors: self.in_errors - before.in_errors,
            in_csum_errors: self.in_csum_errors - before.in_csum_errors,
            no_ports: self.no_ports - before.no_ports,
        }
    }
}

/// Parses `/proc/net/snmp`'s two `Udp:` lines (names, then values).
pub fn parse_snmp_udp(text: &str) -> Result<UdpCounters> {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    let [names, values, ..] = lines[..] else {
        bail!("no Udp lines in /proc/net/snmp");
    };
    let get = |name: &str| -> Result<u64> {
        let i = names
            .split_whitespace()
            .position(|n| n == name)
            .with_context(|| format!("no Udp {name}"))?;
        values
            .split_whitespace()
            .nth(i)
            .context("short Udp values line")?
            .parse()
            .with_context(|| format!("Udp {name}"))
    };
    Ok(UdpCounters {
        in_datagrams: get("InDatagrams")?,
        rcvbuf_errors: get("RcvbufErrors")?,
        in_errors: get("InErrors")?,
        in_csum_errors: get("InCsumErrors")?,
        no_ports: get("NoPorts")?,
    })
}

/// The UDP counters of namespace `ns` now.
pub fn udp_counters(ns: &str) -> Result<UdpCounters> {
    parse_snmp_udp(&netns::exec_ok(ns, "cat", &["/proc/net/snmp"])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_udp_lines() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
            Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n\
            Udp: 100 2 7 50 5 0 1 0 0\n\
            UdpLite: InDatagrams NoPorts\nUdpLite: 0 0\n";
        let c = parse_snmp_udp(text).unwrap();
        assert_eq!(
            c,
            UdpCounters {
                in_datagrams: 100,
                rcvbuf_errors: 5,
                in_errors: 7,
                in_csum_errors: 1,
                no_ports: 2
            }
        );
        assert!(parse_snmp_udp("Ip: x\n").is_err());
    }
}
