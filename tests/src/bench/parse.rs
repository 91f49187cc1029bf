//! Reading what the measuring tools print: iperf3 `-J` reports (TCP and
//! UDP) and iputils ping's per-packet lines.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

/// An iperf3 TCP run, as its client reported it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TcpReport {
    /// Receiver side throughput.
    pub bits_per_second: f64,
    pub received_bytes: u64,
    pub seconds: f64,
    pub retransmits: u64,
    /// iperf3's own CPU use on the client (sender) and server (receiver),
    /// percent of one CPU (iperf3's `host_total`, `remote_total`).
    pub sender_cpu_pct: Option<f64>,
    pub receiver_cpu_pct: Option<f64>,
}

/// An iperf3 UDP run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UdpReport {
    pub sent_packets: u64,
    pub received_packets: u64,
    pub lost_percent: f64,
    pub seconds: f64,
    pub sender_cpu_pct: Option<f64>,
    pub receiver_cpu_pct: Option<f64>,
}

impl UdpReport {
    pub fn received_pps(&self) -> f64 {
        self.received_packets as f64 / self.seconds.max(1e-3)
    }
    pub fn sent_pps(&self) -> f64 {
        self.sent_packets as f64 / self.seconds.max(1e-3)
    }
}

fn report(json: &str) -> Result<Value> {
    let v: Value = serde_json::from_str(json.trim()).context("iperf3 printed no JSON")?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3: {e}");
    }
    Ok(v)
}

fn cpu(v: &Value, key: &str) -> Option<f64> {
    v["end"]["cpu_utilization_percent"][key].as_f64()
}

/// Parses `iperf3 -c .. -J` (TCP, any number of streams).
pub fn tcp(json: &str) -> Result<TcpReport> {
    let v = report(json)?;
    let rx = &v["end"]["sum_received"];
    let r = TcpReport {
        bits_per_second: rx["bits_per_second"]
            .as_f64()
            .context("iperf3 report has no end.sum_received.bits_per_second")?,
        received_bytes: rx["bytes"].as_u64().unwrap_or(0),
        seconds: rx["seconds"].as_f64().unwrap_or(0.0),
        retransmits: v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        sender_cpu_pct: cpu(&v, "host_total"),
        receiver_cpu_pct: cpu(&v, "remote_total"),
    };
    if r.received_bytes == 0 {
        bail!("iperf3 TCP run received nothing");
    }
    Ok(r)
}

/// Parses `iperf3 -c .. -u -J`: packets sent, packets the server got (sent
/// minus lost) and iperf3's loss figure.
pub fn udp(json: &str) -> Result<UdpReport> {
    let v = report(json)?;
    let end = &v["end"];
    // iperf3 ≥ 3.9 splits the sums; older ones only have `sum`.
    let tx = if end["sum_sent"].is_object() {
        &end["sum_sent"]
    } else {
        &end["sum"]
    };
    let rx = if end["sum_received"].is_object() {
        &end["sum_received"]
    } else {
        &end["sum"]
    };
    let packets = rx["packets"]
        .as_u64()
        .context("iperf3 UDP report has no packet count")?;
    let lost = rx["lost_packets"].as_u64().unwrap_or(0);
    Ok(UdpReport {
        sent_packets: tx["packets"].as_u64().unwrap_or(packets),
        received_packets: packets.saturating_sub(lost),
        lost_percent: rx["lost_percent"].as_f64().unwrap_or(0.0),
        seconds: rx["seconds"].as_f64().unwrap_or(0.0),
        sender_cpu_pct: cpu(&v, "host_total"),
        receiver_cpu_pct: cpu(&v, "remote_total"),
    })
}

/// Every reply's round-trip time in milliseconds (`time=0.123 ms`), in order.
pub fn ping_rtts_ms(output: &str) -> Vec<f64> {
    output
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| {
            let rest = l.split("time=").nth(1)?;
            let mut w = rest.split_whitespace();
            let n: f64 = w.next()?.parse().ok()?;
            Some(match w.next() {
                Some("s") => n * 1000.0,
                Some("us") | Some("µs") => n / 1000.0,
                _ => n,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = r#"{"start":{},"intervals":[],"end":{
        "sum_sent":{"bytes":3000000000,"retransmits":7,"seconds":5.0},
        "sum_received":{"bytes":2990000000,"seconds":5.02,"bits_per_second":4.765e9},
        "cpu_utilization_percent":{"host_total":61.5,"remote_total":80.25}}}"#;

    #[test]
    fn tcp_report() {
        let r = tcp(TCP).unwrap();
        assert_eq!(r.bits_per_second, 4.765e9);
        assert_eq!((r.received_bytes, r.retransmits), (2_990_000_000, 7));
        assert_eq!(r.sender_cpu_pct, Some(61.5));
        assert_eq!(r.receiver_cpu_pct, Some(80.25));
        let err = tcp(r#"{"start":{},"end":{},"error":"unable to connect to server"}"#);
        assert!(err.unwrap_err().to_string().contains("unable to connect"));
        assert!(tcp("").is_err());
        assert!(tcp(r#"{"end":{"sum_received":{"bits_per_second":0,"bytes":0}}}"#).is_err());
    }

    #[test]
    fn udp_report_from_iperf_3_12() {
        let json = r#"{"end":{
          "sum":{"seconds":1.000143,"lost_packets":14948,"packets":522730,"lost_percent":2.86},
          "sum_sent":{"seconds":1.000024,"packets":522730,"lost_packets":0},
          "sum_received":{"seconds":1.0,"packets":522730,"lost_packets":14948,"lost_percent":2.86},
          "cpu_utilization_percent":{"host_total":99.2,"remote_total":89.0}}}"#;
        let r = udp(json).unwrap();
        assert_eq!((r.sent_packets, r.received_packets), (522_730, 507_782));
        assert_eq!(r.received_pps(), 507_782.0);
        assert_eq!(r.lost_percent, 2.86);
        assert_eq!(r.sender_cpu_pct, Some(99.2));
    }

    #[test]
    fn udp_report_with_only_sum() {
        let json = r#"{"end":{"sum":{"seconds":2.0,"packets":1000,"lost_packets":100,"lost_percent":10.0}}}"#;
        let r = udp(json).unwrap();
        assert_eq!((r.sent_packets, r.received_packets), (1000, 900));
        assert_eq!(r.received_pps(), 450.0);
        assert_eq!(r.sent_pps(), 500.0);
        assert!(udp(r#"{"end":{}}"#).is_err());
    }

    #[test]
    fn ping_lines() {
        let out = "PING 10.7.3.2 (10.7.3.2) 56(84) bytes of data.\n\
                   64 bytes from 10.7.3.2: icmp_seq=1 ttl=62 time=0.123 ms\n\
                   64 bytes from 10.7.3.2: icmp_seq=2 ttl=62 time=1.50 ms\n\
                   From 10.7.3.1 icmp_seq=3 Destination Net Unreachable\n\
                   64 bytes from 10.7.3.2: icmp_seq=4 ttl=62 time=1.2 s\n\
                   \n--- 10.7.3.2 ping statistics ---\n\
                   4 packets transmitted, 3 received, 25% packet loss, time 31ms\n\
                   rtt min/avg/max/mdev = 0.123/0.9/1.5/0.5 ms\n";
        assert_eq!(ping_rtts_ms(out), vec![0.123, 1.5, 1200.0]);
        assert!(ping_rtts_ms("connect: Network is unreachable").is_empty());
    }
}
