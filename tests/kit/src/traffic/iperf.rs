//! An iperf3 TCP flow between two namespaces (server in one pod, client in
//! another) running in the background while a test does something else, and
//! its JSON report: bytes, retransmits, the slowest second, and the error
//! iperf3 reports when the connection broke (a reset, a timeout).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns;
use crate::traffic::background::Background;

pub const PORT: &str = "5201";

pub struct Iperf {
    server: Background,
    client: Background,
    started: Instant,
    seconds: u32,
}

/// What the client reported.
#[derive(Clone, Debug, PartialEq)]
pub struct IperfResult {
    /// iperf3's own error, if the test did not complete (e.g. a reset).
    pub error: Option<String>,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub retransmits: u64,
    pub seconds: f64,
    /// The slowest and fastest one-second interval, in bits per second.
    pub min_interval_bps: f64,
    pub max_interval_bps: f64,
    pub intervals: usize,
}

impl IperfResult {
    pub fn describe(&self) -> String {
        format!(
            "{:.1} MB in {:.1} s ({:.0} Mbit/s), {} retransmits, slowest second {:.1} Mbit/s, fastest {:.1} Mbit/s{}",
            self.received_bytes as f64 / 1e6,
            self.seconds,
            self.received_bytes as f64 * 8.0 / self.seconds.max(0.001) / 1e6,
            self.retransmits,
            self.min_interval_bps / 1e6,
            self.max_interval_bps / 1e6,
            self.error
                .as_ref()
                .map(|e| format!(", ERROR: {e}"))
                .unwrap_or_default()
        )
    }
}

/// Parses `iperf3 -J` client output.
pub fn parse(json: &str) -> Result<IperfResult> {
    let v: serde_json::Value = serde_json::from_str(json).context("iperf3 printed no JSON")?;
    let end = &v["end"];
    let rates: Vec<f64> = v["intervals"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["sum"]["bits_per_second"].as_f64())
                .collect()
        })
        .unwrap_or_default();
    Ok(IperfResult {
        error: v["error"].as_str().map(str::to_string),
        sent_bytes: end["sum_sent"]["bytes"].as_u64().unwrap_or(0),
        received_bytes: end["sum_received"]["bytes"].as_u64().unwrap_or(0),
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        seconds: end["sum_received"]["seconds"].as_f64().unwrap_or(0.0),
        min_interval_bps: rates.iter().copied().fold(f64::INFINITY, f64::min),
        max_interval_bps: rates.iter().copied().fold(0.0, f64::max),
        intervals: rates.len(),
    })
}

/// Starts a one-shot `iperf3 -s -1` on [`PORT`] in `ns` (output to `out`)
/// and waits until it listens.
pub fn start_server(ns: &str, out: &Path) -> Result<Background> {
    let server = Background::spawn(ns, "iperf3", &["-s", "-1", "-p", PORT], out)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let filter = format!(":{PORT}");
    loop {
        let ss = netns::exec(
            ns,
            "ss",
            &["-Hltn", "sport", "=", &filter],
            Duration::from_secs(5),
        )?;
        if !ss.stdout.trim().is_empty() {
            return Ok(server);
        }
        if Instant::now() >= deadline {
            bail!("iperf3 server in {ns} not listening after 5 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `iperf3` client arguments: to `to` on [`PORT`] for `secs` seconds, JSON
/// report, then `extra`.
pub fn client_args<'a>(to: &'a str, secs: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "-c",
        to,
        "-p",
        PORT,
        "-t",
        secs,
        "-J",
        "--connect-timeout",
        "3000",
    ];
    args.extend_from_slice(extra);
    args
}

impl Iperf {
    /// `iperf3 -s -1` in `server_ns`, then `iperf3 -c to -t seconds -J` in
    /// `client_ns`; outputs under `dir`.
    pub fn start(
        server_ns: &str,
        client_ns: &str,
        to: Ipv4Addr,
        seconds: u32,
        dir: &Path,
    ) -> Result<Iperf> {
        Self::start_with(server_ns, client_ns, to, seconds, dir, &[])
    }

    /// [`start`](Self::start) with more client arguments (e.g. `-M 536`).
    pub fn start_with(
        server_ns: &str,
        client_ns: &str,
        to: Ipv4Addr,
        seconds: u32,
        dir: &Path,
        extra: &[&str],
    ) -> Result<Iperf> {
        let server = start_server(server_ns, &dir.join("iperf3-server.txt"))?;
        let (secs, to) = (seconds.to_string(), to.to_string());
        let args = client_args(&to, &secs, extra);
        let client =
            Background::spawn(client_ns, "iperf3", &args, &dir.join("iperf3-client.json"))?;
        Ok(Iperf {
            server,
            client,
            started: Instant::now(),
            seconds,
        })
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for the client to end (its run time + 20 s at most) and parses
    /// its report; a non-zero exit without an iperf3 error is an error here.
    pub fn finish(mut self) -> Result<IperfResult> {
        let deadline = self.started + Duration::from_secs(u64::from(self.seconds) + 20);
        let status = self.client.wait_until(deadline)?;
        let text = self.client.read()?;
        let _ = self.server.stop();
        let r = parse(&text).with_context(|| format!("iperf3 client output:\n{text}"))?;
        if !status.success() && r.error.is_none() {
            bail!("iperf3 client exited with {status}:\n{text}");
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_report() {
        let json = r#"{"start":{},"intervals":[
            {"sum":{"bits_per_second":2.0e8}},{"sum":{"bits_per_second":1.0e8}},
            {"sum":{"bits_per_second":3.0e8}}],
          "end":{"sum_sent":{"bytes":75000000,"retransmits":12},
                 "sum_received":{"bytes":74000000,"seconds":3.0}}}"#;
        let r = parse(json).unwrap();
        assert_eq!(r.error, None);
        assert_eq!(
            (r.sent_bytes, r.received_bytes, r.retransmits),
            (75_000_000, 74_000_000, 12)
        );
        assert_eq!(
            (r.min_interval_bps, r.max_interval_bps, r.intervals),
            (1.0e8, 3.0e8, 3)
        );
        assert!(r.describe().contains("12 retransmits"), "{}", r.describe());
    }

    #[test]
    fn reads_an_error() {
        let json = r#"{"start":{},"intervals":[],"end":{},
            "error":"error - unable to receive results: Connection reset by peer"}"#;
        let r = parse(json).unwrap();
        assert!(r.error.unwrap().contains("reset"));
        assert!(parse("not json").is_err());
    }
}
