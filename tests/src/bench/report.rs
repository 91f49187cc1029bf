//! From the samples of a run to what it prints: per-mode medians over the
//! rounds, their ratios to kernel vxlan, the table, and the JSON document.

use serde::{Serialize, Serializer};

use crate::bench::config::Mode;
use crate::bench::measure::{PingSample, TcpSample, UdpSample};
use crate::bench::stats::{median_of, ratio};

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Everything measured for one mode in one round; a failed measurement is
/// None with its error in `errors`.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub round: u32,
    /// Position in the round (0 = first).
    pub slot: usize,
    pub mode: Mode,
    pub ping: Option<PingSample>,
    pub tcp1: Option<TcpSample>,
    pub tcp4: Option<TcpSample>,
    pub udp: Option<UdpSample>,
    pub errors: Vec<String>,
}

/// A mode's figure divided by kernel vxlan's (same run).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Ratios {
    pub tcp1: Option<f64>,
    pub tcp4: Option<f64>,
    pub udp_pps: Option<f64>,
    pub rtt_p50: Option<f64>,
    pub rtt_p99: Option<f64>,
}

/// Medians over the rounds of one mode.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub mode: Mode,
    pub rounds: usize,
    pub failed_measurements: usize,
    pub tcp1_gbps: Option<f64>,
    pub tcp4_gbps: Option<f64>,
    pub tcp1_retransmits: Option<f64>,
    pub udp_rx_kpps: Option<f64>,
    pub udp_tx_kpps: Option<f64>,
    pub udp_loss_pct: Option<f64>,
    pub rtt_p50_us: Option<f64>,
    pub rtt_p99_us: Option<f64>,
    pub ping_loss_pct: Option<f64>,
    /// CPU seconds per GB received over both TCP runs of a round.
    pub dataplaned_cpu_s_per_gb: Option<f64>,
    pub machine_cpu_s_per_gb: Option<f64>,
    pub softirq_cpu_s_per_gb: Option<f64>,
    /// dataplaned's CPU in the UDP run, percent of one CPU.
    pub dataplaned_udp_cpu_pct: Option<f64>,
    /// iperf3's own CPU in the 1-stream run (sender, receiver), % of one CPU.
    pub iperf3_sender_cpu_pct: Option<f64>,
    pub iperf3_receiver_cpu_pct: Option<f64>,
    pub vs_vxlan: Ratios,
}

fn per_gb(samples: &[&Sample], cost: impl Fn(&TcpSample) -> Option<f64>) -> Option<f64> {
    median_of(samples.iter().map(|s| {
        let runs: Vec<&TcpSample> = [&s.tcp1, &s.tcp4].into_iter().flatten().collect();
        let gb: f64 = runs
            .iter()
            .map(|r| r.report.received_bytes as f64 / 1e9)
            .sum();
        let cpu: Option<f64> = runs.iter().map(|r| cost(r)).sum();
        cpu.filter(|_| gb > 0.0).map(|c| c / gb)
    }))
}

/// Medians of one mode's samples (ratios left empty).
pub fn summarize_mode(mode: Mode, all: &[Sample]) -> Summary {
    let s: Vec<&Sample> = all.iter().filter(|x| x.mode == mode).collect();
    let m = |f: &dyn Fn(&Sample) -> Option<f64>| median_of(s.iter().map(|x| f(x)));
    Summary {
        mode,
        rounds: s.len(),
        failed_measurements: s.iter().map(|x| x.errors.len()).sum(),
        tcp1_gbps: m(&|x| x.tcp1.as_ref().map(|t| t.report.bits_per_second / 1e9)),
        tcp4_gbps: m(&|x| x.tcp4.as_ref().map(|t| t.report.bits_per_second / 1e9)),
        tcp1_retransmits: m(&|x| x.tcp1.as_ref().map(|t| t.report.retransmits as f64)),
        udp_rx_kpps: m(&|x| x.udp.as_ref().map(|u| u.report.received_pps() / 1e3)),
        udp_tx_kpps: m(&|x| x.udp.as_ref().map(|u| u.report.sent_pps() / 1e3)),
        udp_loss_pct: m(&|x| x.udp.as_ref().map(|u| u.report.lost_percent)),
        rtt_p50_us: m(&|x| x.ping.as_ref().and_then(|p| p.p50_ms).map(|v| v * 1e3)),
        rtt_p99_us: m(&|x| x.ping.as_ref().and_then(|p| p.p99_ms).map(|v| v * 1e3)),
        ping_loss_pct: m(&|x| {
            x.ping
                .as_ref()
                .filter(|p| p.sent > 0)
                .map(|p| f64::from(p.sent.saturating_sub(p.received)) * 100.0 / f64::from(p.sent))
        }),
        dataplaned_cpu_s_per_gb: per_gb(&s, |t| t.cpu.dataplaned_s),
        machine_cpu_s_per_gb: per_gb(&s, |t| Some(t.cpu.machine_s)),
        softirq_cpu_s_per_gb: per_gb(&s, |t| Some(t.cpu.softirq_s)),
        dataplaned_udp_cpu_pct: m(&|x| {
            x.udp.as_ref().and_then(|u| {
                u.cpu
                    .dataplaned_s
                    .map(|c| c * 100.0 / u.report.seconds.max(1e-3))
            })
        }),
        iperf3_sender_cpu_pct: m(&|x| x.tcp1.as_ref().and_then(|t| t.report.sender_cpu_pct)),
        iperf3_receiver_cpu_pct: m(&|x| x.tcp1.as_ref().and_then(|t| t.report.receiver_cpu_pct)),
        vs_vxlan: Ratios::default(),
    }
}

/// The medians of each mode of `modes`, in table order ([`Mode::ALL`]'s),
/// with ratios to [`Mode::REFERENCE`] (none if it is not among them).
pub fn summarize(modes: &[Mode], samples: &[Sample]) -> Vec<Summary> {
    let mut out: Vec<Summary> = Mode::ALL
        .into_iter()
        .filter(|m| modes.contains(m))
        .map(|m| summarize_mode(m, samples))
        .collect();
    let r = out.iter().find(|s| s.mode == Mode::REFERENCE).cloned();
    if let Some(r) = r {
        for s in &mut out {
            s.vs_vxlan = Ratios {
                tcp1: ratio(s.tcp1_gbps, r.tcp1_gbps),
                tcp4: ratio(s.tcp4_gbps, r.tcp4_gbps),
                udp_pps: ratio(s.udp_rx_kpps, r.udp_rx_kpps),
                rtt_p50: ratio(s.rtt_p50_us, r.rtt_p50_us),
                rtt_p99: ratio(s.rtt_p99_us, r.rtt_p99_us),
            };
        }
    }
    out
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

fn with_ratio(v: Option<f64>, r: Option<f64>, decimals: usize) -> String {
    match (v, r) {
        (Some(_), Some(r)) => format!("{} ({r:.2}x)", num(v, decimals)),
        _ => num(v, decimals),
    }
}

/// The table: one row per mode, ratios to vxlan in parentheses.
pub fn table(summaries: &[Summary]) -> String {
    let header = [
        "mode",
        "TCP 1 stream Gbit/s",
        "TCP 4 streams Gbit/s",
        "UDP 64 B rx kpps",
        "UDP loss %",
        "RTT p50 us",
        "RTT p99 us",
        "dataplaned CPU s/GB",
        "machine CPU s/GB",
        "iperf3 CPU % snd/rcv",
    ];
    let rows: Vec<Vec<String>> = summaries
        .iter()
        .map(|s| {
            vec![
                s.mode.name().to_string(),
                with_ratio(s.tcp1_gbps, s.vs_vxlan.tcp1, 3),
                with_ratio(s.tcp4_gbps, s.vs_vxlan.tcp4, 3),
                with_ratio(s.udp_rx_kpps, s.vs_vxlan.udp_pps, 1),
                num(s.udp_loss_pct, 1),
                with_ratio(s.rtt_p50_us, s.vs_vxlan.rtt_p50, 0),
                with_ratio(s.rtt_p99_us, s.vs_vxlan.rtt_p99, 0),
                num(s.dataplaned_cpu_s_per_gb, 3),
                num(s.machine_cpu_s_per_gb, 3),
                format!(
                    "{}/{}",
                    num(s.iperf3_sender_cpu_pct, 0),
                    num(s.iperf3_receiver_cpu_pct, 0)
                ),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| -> String {
        let mut l: Vec<String> = Vec::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 0 {
                l.push(format!("{c:<w$}", w = widths[i]));
            } else {
                l.push(format!("{c:>w$}", w = widths[i]));
            }
        }
        format!("| {} |\n", l.join(" | "))
    };
    let mut out = line(header.to_vec());
    let seps: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&line(seps.iter().map(String::as_str).collect()));
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` of a Unix time (civil-from-days, proleptic
/// Gregorian), so the report needs no date crate.
pub fn utc_timestamp(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::measure::CpuCost;
    use crate::bench::parse::{TcpReport, UdpReport};

    fn tcp(gbps: f64, streams: u32, dp: Option<f64>) -> TcpSample {
        TcpSample {
            streams,
            report: TcpReport {
                bits_per_second: gbps * 1e9,
                received_bytes: (gbps * 1e9 / 8.0 * 5.0) as u64,
                seconds: 5.0,
                retransmits: 1,
                sender_cpu_pct: Some(50.0),
                receiver_cpu_pct: Some(70.0),
            },
            cpu: CpuCost {
                dataplaned_s: dp,
                machine_s: 4.0,
                softirq_s: 1.0,
            },
        }
    }

    fn sample(round: u32, mode: Mode, gbps: f64, rtt_ms: f64, kpps: f64) -> Sample {
        // The udp dataplanes cost CPU (busy polling more), the others none.
        let dp = match mode {
            Mode::Udp | Mode::UdpOneQueue => Some(2.0),
            Mode::UdpBusy => Some(3.0),
            _ => None,
        };
        Sample {
            round,
            slot: 0,
            mode,
            ping: Some(PingSample {
                sent: 200,
                received: 199,
                p50_ms: Some(rtt_ms),
                p99_ms: Some(rtt_ms * 2.0),
                max_ms: Some(rtt_ms * 3.0),
            }),
            tcp1: Some(tcp(gbps, 1, dp)),
            tcp4: Some(tcp(gbps * 1.5, 4, dp)),
            udp: Some(UdpSample {
                report: UdpReport {
                    sent_packets: (kpps * 2e3) as u64,
                    received_packets: (kpps * 1e3) as u64,
                    lost_percent: 50.0,
                    seconds: 1.0,
                    sender_cpu_pct: None,
                    receiver_cpu_pct: None,
                },
                cpu: CpuCost {
                    dataplaned_s: dp.map(|_| 0.5),
                    machine_s: 2.0,
                    softirq_s: 0.5,
                },
            }),
            errors: vec![],
        }
    }

    #[test]
    fn medians_and_ratios_to_vxlan() {
        let mut v = Vec::new();
        for (r, g) in [(0, 8.0), (1, 10.0), (2, 9.0)] {
            v.push(sample(r, Mode::Vxlan, g, 0.1, 200.0));
            v.push(sample(r, Mode::Udp, g / 4.0, 0.15, 100.0));
            v.push(sample(r, Mode::UdpBusy, g / 4.0, 0.12, 100.0));
        }
        let mut failed = sample(3, Mode::Udp, 0.0, 0.0, 0.0);
        failed.tcp1 = None;
        failed.tcp4 = None;
        failed.ping = None;
        failed.udp = None;
        failed.errors.push("iperf3: boom".into());
        v.push(failed);
        let s = summarize(&Mode::ALL, &v);
        let order: Vec<Mode> = s.iter().map(|x| x.mode).collect();
        assert_eq!(order, Mode::ALL.to_vec());
        let udp = &s[0];
        assert_eq!(
            (udp.mode, udp.rounds, udp.failed_measurements),
            (Mode::Udp, 4, 1)
        );
        assert_eq!(udp.tcp1_gbps, Some(2.25));
        assert_eq!(udp.vs_vxlan.tcp1, Some(0.25));
        assert_eq!(udp.vs_vxlan.udp_pps, Some(0.5));
        assert!((udp.vs_vxlan.rtt_p50.unwrap() - 1.5).abs() < 1e-9);
        assert_eq!(udp.ping_loss_pct, Some(0.5));
        assert_eq!(udp.dataplaned_udp_cpu_pct, Some(50.0));
        // 4 s of dataplaned CPU over (2.25 + 3.375) Gbit/s × 5 s / 8 of data.
        let gb = (2.25 + 3.375) * 5.0 / 8.0;
        assert!((udp.dataplaned_cpu_s_per_gb.unwrap() - 4.0 / gb).abs() < 1e-9);
        let busy = &s[1];
        assert_eq!((busy.mode, busy.rounds), (Mode::UdpBusy, 3));
        assert!((busy.vs_vxlan.rtt_p50.unwrap() - 1.2).abs() < 1e-9);
        assert!((busy.dataplaned_cpu_s_per_gb.unwrap() - 6.0 / gb).abs() < 1e-9);
        let one_queue = &s[2];
        assert_eq!(
            (one_queue.mode, one_queue.rounds, one_queue.tcp1_gbps),
            (Mode::UdpOneQueue, 0, None)
        );
        let vx = &s[3];
        assert_eq!(vx.vs_vxlan.tcp1, Some(1.0));
        assert_eq!(vx.dataplaned_cpu_s_per_gb, None);
        let bare = &s[5];
        assert_eq!(
            (bare.rounds, bare.tcp1_gbps, bare.vs_vxlan.tcp1),
            (0, None, None)
        );
        let t = table(&s);
        assert!(t.contains("| udp "), "{t}");
        assert!(t.contains("2.250 (0.25x)"), "{t}");
        assert!(t.contains("150 (1.50x)"), "{t}");
        assert_eq!(t.lines().count(), 8);
        let busy_row = t.lines().nth(3).unwrap();
        assert!(busy_row.starts_with("| udp-busy "), "{t}");
        assert!(busy_row.contains("120 (1.20x)"), "{t}");
        assert!(busy_row.contains(&format!("{:.3}", 6.0 / gb)), "{t}");
        assert!(
            t.lines().nth(2).unwrap().starts_with("| udp        |"),
            "{t}"
        );
        let widths: Vec<usize> = t.lines().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{t}");
    }

    #[test]
    fn a_subset_is_summarized_in_table_order() {
        let mut v = Vec::new();
        for r in 0..2 {
            // Measured in rotated order; the summary keeps the table's.
            v.push(sample(r, Mode::Vxlan, 8.0, 0.1, 200.0));
            v.push(sample(r, Mode::UdpOneQueue, 3.0, 0.2, 80.0));
            v.push(sample(r, Mode::Udp, 4.0, 0.15, 100.0));
        }
        let s = summarize(&[Mode::Vxlan, Mode::UdpOneQueue, Mode::Udp], &v);
        let order: Vec<Mode> = s.iter().map(|x| x.mode).collect();
        assert_eq!(order, [Mode::Udp, Mode::UdpOneQueue, Mode::Vxlan]);
        assert_eq!(s[1].vs_vxlan.tcp1, Some(0.375));
        assert!((s[1].vs_vxlan.rtt_p50.unwrap() - 2.0).abs() < 1e-9);
        let t = table(&s);
        assert_eq!(t.lines().count(), 5, "{t}");
        assert!(
            t.lines().nth(3).unwrap().starts_with("| udp-1queue |"),
            "{t}"
        );
        // Without the reference there are medians but no ratios.
        let s = summarize(&[Mode::Udp], &v);
        assert_eq!(
            (s.len(), s[0].tcp1_gbps, s[0].vs_vxlan.tcp1),
            (1, Some(4.0), None)
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_732_240_861), "2024-11-22T02:01:01Z");
    }
}
