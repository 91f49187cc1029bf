//! One measurement against a target: a fast ping (RTT percentiles), an
//! iperf3 TCP run (throughput and the CPU it cost: dataplaned's own, the
//! machine's, iperf3's) or an iperf3 UDP run with 64-byte payloads (packet
//! rate). Each iperf3 run gets a fresh one-shot server; every command runs
//! under a deadline.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use crate::bench::parse::{self, TcpReport, UdpReport};
use crate::bench::procfs;
use crate::bench::stats::percentile;
use crate::bench::target::Target;
use kolach_testkit::traffic::parse_ping;
use kolach_testkit::{netns, traffic::iperf};

/// UDP payload of the small-packet run.
pub const UDP_PAYLOAD: &str = "64";

/// A ping run: how many answered and the RTT percentiles.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PingSample {
    pub sent: u32,
    pub received: u32,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// CPU seconds spent during a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuCost {
    /// Both hosts' kolach-dataplaned together (None for the bare underlay).
    pub dataplaned_s: Option<f64>,
    /// The whole machine (all CPUs, everything but idle and iowait): both
    /// iperf3s, the kernel's softirq work, the daemons, and whatever else
    /// runs on the machine at the time.
    pub machine_s: f64,
    /// The softirq part of `machine_s`.
    pub softirq_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TcpSample {
    pub streams: u32,
    pub report: TcpReport,
    pub cpu: CpuCost,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UdpSample {
    pub report: UdpReport,
    pub cpu: CpuCost,
}

struct CpuMark {
    dataplaned: Option<f64>,
    machine: f64,
    softirq: f64,
}

fn cpu_mark(t: &Target) -> Result<CpuMark> {
    let dataplaned = if t.dataplaned.is_empty() {
        None
    } else {
        let mut s = 0.0;
        for &pid in &t.dataplaned {
            s += procfs::process_cpu_secs(pid)?;
        }
        Some(s)
    };
    let (machine, softirq) = procfs::machine_cpu_secs()?;
    Ok(CpuMark {
        dataplaned,
        machine,
        softirq,
    })
}

fn cpu_since(t: &Target, before: &CpuMark) -> Result<CpuCost> {
    let after = cpu_mark(t)?;
    Ok(CpuCost {
        dataplaned_s: after.dataplaned.zip(before.dataplaned).map(|(a, b)| a - b),
        machine_s: after.machine - before.machine,
        softirq_s: after.softirq - before.softirq,
    })
}

/// `count` pings `interval` seconds apart from the client to the server.
pub fn ping(t: &Target, count: u32, interval: f64) -> Result<PingSample> {
    let (c, i, ip) = (
        count.to_string(),
        interval.to_string(),
        t.server_ip.to_string(),
    );
    let limit = Duration::from_secs_f64(f64::from(count) * interval * 2.0 + 10.0);
    let out = netns::exec(
        &t.client_ns,
        "ping",
        &["-n", "-i", &i, "-c", &c, "-W", "1", &ip],
        limit,
    )?;
    let rtts = parse::ping_rtts_ms(&out.stdout);
    let summary = parse_ping(&out.stdout);
    if rtts.is_empty() {
        bail!(
            "no ping reply from {ip}: {}{}",
            out.stdout.trim(),
            out.stderr.trim()
        );
    }
    Ok(PingSample {
        sent: summary.transmitted.max(rtts.len() as u32),
        received: rtts.len() as u32,
        p50_ms: percentile(&rtts, 50.0),
        p99_ms: percentile(&rtts, 99.0),
        max_ms: percentile(&rtts, 100.0),
    })
}

/// Runs an iperf3 client with `extra` arguments against a fresh server;
/// returns its JSON report.
fn client(t: &Target, tag: &str, seconds: u32, extra: &[&str]) -> Result<String> {
    let log = t.lab.dir.join(format!("iperf3-server-{tag}.txt"));
    let mut srv = iperf::start_server(&t.server_ns, &log)?;
    let (ip, secs) = (t.server_ip.to_string(), seconds.to_string());
    let args = iperf::client_args(&ip, &secs, extra);
    let limit = Duration::from_secs(u64::from(seconds) + 20);
    let out = netns::exec(&t.client_ns, "iperf3", &args, limit);
    // A one-shot server ends with its test; one left behind (a client that
    // never connected) is killed here.
    let _ = srv.wait_until(Instant::now() + Duration::from_secs(2));
    let out = out?;
    if out.stdout.trim().is_empty() {
        bail!(
            "iperf3 client printed nothing ({}): {}",
            out.status,
            out.stderr.trim()
        );
    }
    Ok(out.stdout)
}

/// A TCP run with `streams` parallel streams.
pub fn tcp(t: &Target, streams: u32, seconds: u32) -> Result<TcpSample> {
    let p = streams.to_string();
    let before = cpu_mark(t)?;
    let json = client(t, &format!("tcp{streams}"), seconds, &["-P", &p])?;
    let cpu = cpu_since(t, &before)?;
    Ok(TcpSample {
        streams,
        report: parse::tcp(&json)?,
        cpu,
    })
}

/// A UDP run with 64-byte payloads at iperf3 rate `rate` (`-b`).
pub fn udp(t: &Target, seconds: u32, rate: &str) -> Result<UdpSample> {
    let before = cpu_mark(t)?;
    let json = client(t, "udp", seconds, &["-u", "-l", UDP_PAYLOAD, "-b", rate])?;
    let cpu = cpu_since(t, &before)?;
    Ok(UdpSample {
        report: parse::udp(&json)?,
        cpu,
    })
}
