//! A steady ping running in the background while a test does something else
//! (restarts daemons): `ping -D -i <interval> -c <count>` inside a pod, its
//! output in a file, the summary and every unanswered sequence number parsed
//! when it ends. A fixed count (rather than SIGINT) lets ping wait for the last
//! replies, so a probe in flight at the end never counts as lost.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::traffic::background::Background;
use crate::traffic::{parse_ping, PingResult};

pub struct SteadyPing {
    proc: Background,
    pub started: Instant,
    /// How long ping needs for all its probes.
    pub planned: Duration,
}

/// How a steady ping went.
#[derive(Clone, Debug)]
pub struct SteadyResult {
    pub summary: PingResult,
    /// Sequence numbers that got no reply, as ranges, with the `-D` time of
    /// the last reply before each range.
    pub gaps: Vec<Gap>,
    pub took: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Gap {
    pub first: u32,
    pub last: u32,
    pub after_reply_at: Option<f64>,
}

impl SteadyResult {
    pub fn lost(&self) -> u32 {
        self.summary
            .transmitted
            .saturating_sub(self.summary.received)
    }

    /// One line for the test output.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} transmitted, {} received, {} lost in {:.1?}",
            self.summary.transmitted,
            self.summary.received,
            self.lost(),
            self.took
        );
        for g in &self.gaps {
            s.push_str(&format!(
                "\n  no reply for icmp_seq {}..={} (last reply before at {})",
                g.first,
                g.last,
                g.after_reply_at
                    .map_or("-".to_string(), |t| format!("{t:.3}"))
            ));
        }
        s
    }
}

/// icmp_seq → `-D` timestamp of every reply line.
pub fn parse_replies(output: &str) -> BTreeMap<u32, Option<f64>> {
    let mut m = BTreeMap::new();
    for line in output.lines() {
        if !line.contains(" bytes from ") {
            continue;
        }
        let Some(seq) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("icmp_seq="))
            .and_then(|s| s.parse().ok())
        else {
            continue;
        };
        let ts = line
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .and_then(|(t, _)| t.parse().ok());
        m.insert(seq, ts);
    }
    m
}

/// The ranges of 1..=transmitted that got no reply.
pub fn gaps(transmitted: u32, replies: &BTreeMap<u32, Option<f64>>) -> Vec<Gap> {
    let mut out: Vec<Gap> = Vec::new();
    for seq in 1..=transmitted {
        if replies.contains_key(&seq) {
            continue;
        }
        match out.last_mut() {
            Some(g) if g.last + 1 == seq => g.last = seq,
            _ => out.push(Gap {
                first: seq,
                last: seq,
                after_reply_at: replies.range(..seq).next_back().and_then(|(_, t)| *t),
            }),
        }
    }
    out
}

impl SteadyPing {
    /// Starts `ping -n -D -i interval -c count -W 1 to` inside `ns`, output to `output`.
    pub fn start(
        ns: &str,
        to: Ipv4Addr,
        interval: Duration,
        count: u32,
        output: &Path,
    ) -> Result<SteadyPing> {
        let interval_s = format!("{:.3}", interval.as_secs_f64());
        let (count_s, to_s) = (count.to_string(), to.to_string());
        let args = [
            "-n",
            "-D",
            "-W",
            "1",
            "-i",
            &interval_s,
            "-c",
            &count_s,
            &to_s,
        ];
        Ok(SteadyPing {
            proc: Background::spawn(ns, "ping", &args, output)?,
            started: Instant::now(),
            planned: interval * count,
        })
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Waits for ping to end (at most `planned` + `slack` after its start),
    /// then parses its output. Killed and reported if it overruns.
    pub fn finish(mut self, slack: Duration) -> Result<SteadyResult> {
        self.proc.wait_until(self.started + self.planned + slack)?;
        let took = self.started.elapsed();
        let text = self.proc.read()?;
        let summary = parse_ping(&text);
        if summary.transmitted == 0 {
            bail!(
                "ping printed no summary:\n{}",
                crate::process::tail(&self.proc.output, 10)
            );
        }
        let replies = parse_replies(&text);
        Ok(SteadyResult {
            gaps: gaps(summary.transmitted, &replies),
            summary: PingResult {
                // The whole per-reply output is in the file; keep the summary short.
                output: crate::process::tail(&self.proc.output, 4),
                ..summary
            },
            took,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "PING 10.50.2.2 (10.50.2.2) 56(84) bytes of data.\n\
        [1722950000.100000] 64 bytes from 10.50.2.2: icmp_seq=1 ttl=62 time=0.080 ms\n\
        [1722950000.105000] 64 bytes from 10.50.2.2: icmp_seq=2 ttl=62 time=0.081 ms\n\
        [1722950000.120000] 64 bytes from 10.50.2.2: icmp_seq=5 ttl=62 time=0.070 ms\n\
        \n--- 10.50.2.2 ping statistics ---\n\
        6 packets transmitted, 3 received, 50% packet loss, time 25ms\n\
        rtt min/avg/max/mdev = 0.070/0.077/0.081/0.005 ms\n";

    #[test]
    fn finds_unanswered_sequences() {
        let replies = parse_replies(OUT);
        assert_eq!(replies.keys().copied().collect::<Vec<_>>(), [1, 2, 5]);
        assert_eq!(replies[&2], Some(1722950000.105));
        let g = gaps(6, &replies);
        assert_eq!(
            g,
            vec![
                Gap {
                    first: 3,
                    last: 4,
                    after_reply_at: Some(1722950000.105)
                },
                Gap {
                    first: 6,
                    last: 6,
                    after_reply_at: Some(1722950000.12)
                },
            ]
        );
        let r = SteadyResult {
            summary: parse_ping(OUT),
            gaps: g,
            took: Duration::from_millis(30),
        };
        assert_eq!(r.lost(), 3);
        assert!(r.describe().contains("icmp_seq 3..=4"), "{}", r.describe());
    }

    #[test]
    fn no_gaps_when_all_answered() {
        let replies: BTreeMap<u32, Option<f64>> = (1..=3).map(|s| (s, None)).collect();
        assert!(gaps(3, &replies).is_empty());
    }
}
