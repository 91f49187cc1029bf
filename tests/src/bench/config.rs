//! What the bench measures and how long: the five modes, the `BENCH_*`
//! environment variables, and the order the modes take in each round.

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::backend::Backend;

/// One way pods (or hosts, for the bare underlay) reach each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    Udp,
    /// The udp backend with both dataplanes busy polling
    /// (`KOLACH_BUSY_POLL=`[`BUSY_POLL`]): round-trip time bought with CPU.
    UdpBusy,
    Vxlan,
    HostGw,
    /// Host to host over the veth/bridge underlay, no overlay at all.
    Bare,
}

impl Mode {
    /// Every mode, in table order.
    pub const ALL: [Mode; 5] = [
        Mode::Udp,
        Mode::UdpBusy,
        Mode::Vxlan,
        Mode::HostGw,
        Mode::Bare,
    ];

    /// The mode the ratios are taken against.
    pub const REFERENCE: Mode = Mode::Vxlan;

    pub fn name(self) -> &'static str {
        match self {
            Mode::Udp => "udp",
            Mode::UdpBusy => "udp-busy",
            Mode::Vxlan => "vxlan",
            Mode::HostGw => "host-gw",
            Mode::Bare => "underlay",
        }
    }

    /// The kolach backend a mode runs, None for the bare underlay.
    pub fn backend(self) -> Option<Backend> {
        match self {
            Mode::Udp | Mode::UdpBusy => Some(Backend::Udp),
            Mode::Vxlan => Some(Backend::Vxlan),
            Mode::HostGw => Some(Backend::HostGw),
            Mode::Bare => None,
        }
    }

    /// Environment set on both hosts' kolach-dataplaned besides the lab's own.
    pub fn dataplaned_env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Mode::UdpBusy => &[(BUSY_POLL_ENV, BUSY_POLL)],
            Mode::Udp | Mode::Vxlan | Mode::HostGw | Mode::Bare => &[],
        }
    }
}

impl Mode {
    /// Whether host1's DataplaneStatus.mode shows what the mode asked
    /// dataplaned for: udp-busy's must name busy-poll (a dataplaned without
    /// `--busy-poll` ignores the variable and would just measure udp again).
    pub fn dataplane_mode_confirms(self, dataplane_mode: Option<&str>) -> bool {
        match self {
            Mode::UdpBusy => dataplane_mode.is_some_and(|m| m.contains("busy-poll")),
            Mode::Udp | Mode::Vxlan | Mode::HostGw | Mode::Bare => true,
        }
    }
}

/// kolach-dataplaned's variable for `--busy-poll`.
pub const BUSY_POLL_ENV: &str = "KOLACH_BUSY_POLL";

/// How long the udp-busy dataplanes keep polling after the last packet.
/// Longer than the 10 ms between two pings (`BENCH_PING_INTERVAL` default),
/// so each ping finds the packet loop still polling rather than asleep;
/// with a longer `BENCH_PING_INTERVAL` the loop sleeps between pings and the
/// mode's round-trip time is udp's again.
pub const BUSY_POLL: &str = "20ms";

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The modes of round `round` (0-based): [`Mode::ALL`] rotated by the round,
/// so over any `Mode::ALL.len()` consecutive rounds every mode runs first,
/// second, ... exactly once.
pub fn round_order(round: usize) -> [Mode; Mode::ALL.len()] {
    let mut m = Mode::ALL;
    m.rotate_left(round % Mode::ALL.len());
    m
}

/// The knobs of a run, each also from its `BENCH_*` variable.
#[derive(Clone, Debug, PartialEq, clap::Parser)]
#[command(
    name = "kolach-bench",
    about = "kolach udp, udp with busy polling, vxlan, host-gw and the bare underlay measured side by side (make bench)"
)]
pub struct BenchConfig {
    /// Rounds; each measures every mode once, the order rotated per round.
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,
    /// Length of each iperf3 run in seconds.
    #[arg(long, env = "BENCH_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=600))]
    pub seconds: u32,
    /// Pings per round and mode.
    #[arg(long, env = "BENCH_PINGS", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub pings: u32,
    /// Seconds between pings (ping -i; below 0.2 needs root).
    #[arg(long, env = "BENCH_PING_INTERVAL", default_value_t = 0.01)]
    pub ping_interval: f64,
    /// iperf3 -b of the 64-byte UDP run; 0 sends as fast as the sender can.
    #[arg(long, env = "BENCH_UDP_RATE", default_value = "0")]
    pub udp_rate: String,
    /// Phantom udp leases loaded at the end to read dataplaned's peak RSS (0 skips).
    #[arg(long, env = "BENCH_ROUTES", default_value_t = 5000,
          value_parser = clap::value_parser!(u32).range(0..=60_000))]
    pub routes: u32,
    /// Where the JSON report goes (a timestamped copy is kept beside it).
    #[arg(long, env = "BENCH_OUT", default_value = "bench/results.json")]
    pub out: PathBuf,
}

/// The network config of every kolach lab: a /8 so that 5,000 phantom /24
/// leases fit beside the hosts' own.
pub fn network_config(backend: Backend) -> String {
    format!(
        r#"{{"Network":"{NETWORK}","Backend":{{"Type":"{}"}}}}"#,
        backend.name()
    )
}

pub const NETWORK: &str = "10.0.0.0/8";

impl BenchConfig {
    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<()> {
        if !(0.002..=1.0).contains(&self.ping_interval) {
            bail!(
                "BENCH_PING_INTERVAL={} is not in 0.002..=1 seconds",
                self.ping_interval
            );
        }
        Ok(())
    }

    /// A rough length of the measuring part, for the progress line.
    pub fn estimate_secs(&self) -> f64 {
        let ping = f64::from(self.pings) * self.ping_interval + 1.0;
        let per_mode = 3.0 * (f64::from(self.seconds) + 1.0) + ping;
        f64::from(self.rounds) * Mode::ALL.len() as f64 * per_mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cfg(args: &[&str]) -> Result<BenchConfig> {
        let c = BenchConfig::try_parse_from(
            std::iter::once("kolach-bench").chain(args.iter().copied()),
        )?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_and_overrides() {
        let d = cfg(&[]).unwrap();
        assert_eq!((d.rounds, d.seconds, d.pings, d.routes), (5, 5, 200, 5000));
        assert_eq!(d.out, PathBuf::from("bench/results.json"));
        assert_eq!(d.udp_rate, "0");
        let q = cfg(&[
            "--rounds",
            "1",
            "--seconds",
            "2",
            "--routes",
            "0",
            "--out",
            "/tmp/x.json",
        ])
        .unwrap();
        assert_eq!((q.rounds, q.seconds, q.routes), (1, 2, 0));
        assert_eq!(q.out, PathBuf::from("/tmp/x.json"));
        assert!(cfg(&["--rounds", "0"]).is_err());
        assert!(cfg(&["--seconds", "five"]).is_err());
        assert!(cfg(&["--ping-interval", "0"]).is_err());
    }

    #[test]
    fn rounds_rotate_every_mode_through_every_slot() {
        let n = Mode::ALL.len();
        assert_eq!(n, 5);
        assert_eq!(round_order(0), Mode::ALL);
        assert_eq!(
            round_order(1),
            [
                Mode::UdpBusy,
                Mode::Vxlan,
                Mode::HostGw,
                Mode::Bare,
                Mode::Udp
            ]
        );
        assert_eq!(round_order(n), round_order(0));
        assert_eq!(round_order(n + 2), round_order(2));
        for r in 0..n {
            let mut modes = round_order(r).to_vec();
            modes.sort();
            assert_eq!(modes, Mode::ALL.to_vec(), "round {r} runs every mode once");
        }
        // Over any ALL.len() consecutive rounds, every mode in every slot once.
        for first in [0, 3] {
            for slot in 0..n {
                let mut seen: Vec<Mode> =
                    (first..first + n).map(|r| round_order(r)[slot]).collect();
                seen.sort();
                assert_eq!(seen, Mode::ALL.to_vec(), "slot {slot} from round {first}");
            }
        }
    }

    #[test]
    fn mode_names_backends_and_env() {
        let names: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["udp", "udp-busy", "vxlan", "host-gw", "underlay"]);
        assert_eq!(Mode::UdpBusy.to_string(), "udp-busy");
        assert_eq!(Mode::UdpBusy.backend(), Some(Backend::Udp));
        assert_eq!(Mode::Udp.backend(), Some(Backend::Udp));
        assert_eq!(
            Mode::UdpBusy.dataplaned_env(),
            &[("KOLACH_BUSY_POLL", "20ms")]
        );
        for m in Mode::ALL.into_iter().filter(|&m| m != Mode::UdpBusy) {
            assert!(m.dataplaned_env().is_empty(), "{m}");
        }
        let busy = "offload (tun-tso, tun-uso, udp-gso, udp-gro), busy-poll 20ms";
        assert!(Mode::UdpBusy.dataplane_mode_confirms(Some(busy)));
        assert!(!Mode::UdpBusy.dataplane_mode_confirms(Some("offload (tun-tso)")));
        assert!(!Mode::UdpBusy.dataplane_mode_confirms(None));
        assert!(Mode::Udp.dataplane_mode_confirms(Some("offload (tun-tso)")));
        assert!(Mode::Bare.dataplane_mode_confirms(None));
        // Busy polling must outlast the default gap between two pings.
        let ping_gap_ms = cfg(&[]).unwrap().ping_interval * 1e3;
        let busy_ms: f64 = BUSY_POLL.trim_end_matches("ms").parse().unwrap();
        assert!(busy_ms > ping_gap_ms, "{BUSY_POLL} vs {ping_gap_ms} ms");
    }

    #[test]
    fn config_is_the_wide_network() {
        assert_eq!(
            network_config(Backend::Vxlan),
            r#"{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}"#
        );
        assert_eq!(Mode::Bare.backend(), None);
        assert_eq!(Mode::HostGw.to_string(), "host-gw");
    }
}
