//! What the bench measures and how long: the six modes (and what two of them
//! ask of kolach-dataplaned), the `BENCH_*` environment variables, and the
//! order the selected modes take in each round.

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
    /// The udp backend with a TUN queue, socket and pinned loop thread per
    /// CPU, steered by CPU (`KOLACH_QUEUES=`[`QUEUES`]).
    UdpQueues,
    Vxlan,
    HostGw,
    /// Host to host over the veth/bridge underlay, no overlay at all.
    Bare,
}

/// What a mode asks of both hosts' kolach-dataplaned beyond the udp
/// backend's defaults, and how the dataplane's status shows it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    /// Set in both dataplaneds' environment besides the lab's own.
    pub env: &'static [(&'static str, &'static str)],
    /// Part of host1's DataplaneStatus.mode once the dataplane runs so.
    pub shows: &'static str,
    /// Why a dataplaned that takes `env` may still run without it.
    pub may_not: Option<&'static str>,
    /// A part of the mode saying the dataplane took `env` only partly, and
    /// what the bench then measures.
    pub partly: Option<(&'static str, &'static str)>,
}

impl Mode {
    /// Every mode, in table order.
    pub const ALL: [Mode; 6] = [
        Mode::Udp,
        Mode::UdpBusy,
        Mode::UdpQueues,
        Mode::Vxlan,
        Mode::HostGw,
        Mode::Bare,
    ];

    /// The mode the ratios are taken against; every run measures it.
    pub const REFERENCE: Mode = Mode::Vxlan;

    pub fn name(self) -> &'static str {
        match self {
            Mode::Udp => "udp",
            Mode::UdpBusy => "udp-busy",
            Mode::UdpQueues => "udp-queues",
            Mode::Vxlan => "vxlan",
            Mode::HostGw => "host-gw",
            Mode::Bare => "underlay",
        }
    }

    /// A mode by its name (`--modes`); the error names every valid one.
    pub fn parse(name: &str) -> Result<Mode, String> {
        let name = name.trim();
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                let valid: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
                format!("no mode {name:?}; the modes are {}", valid.join(", "))
            })
    }

    /// The kolach backend a mode runs, None for the bare underlay.
    pub fn backend(self) -> Option<Backend> {
        match self {
            Mode::Udp | Mode::UdpBusy | Mode::UdpQueues => Some(Backend::Udp),
            Mode::Vxlan => Some(Backend::Vxlan),
            Mode::HostGw => Some(Backend::HostGw),
            Mode::Bare => None,
        }
    }

    /// What the mode asks of kolach-dataplaned (None: its defaults).
    pub fn ask(self) -> Option<Ask> {
        match self {
            Mode::UdpBusy => Some(Ask {
                env: &[(BUSY_POLL_ENV, BUSY_POLL)],
                shows: "busy-poll",
                may_not: None,
                partly: None,
            }),
            Mode::UdpQueues => Some(Ask {
                env: &[(QUEUES_ENV, QUEUES)],
                shows: "queues by cpu",
                may_not: Some(
                    "auto gives one queue per CPU kolach-dataplaned may use, \
                     so one on a one-CPU machine",
                ),
                partly: Some((
                    "queues by flow",
                    "the TUN picks queues by flow (kolach-dataplaned could not load its \
                     steer-by-CPU eBPF program: no CAP_BPF?), so the queues lose their CPU locality",
                )),
            }),
            Mode::Udp | Mode::Vxlan | Mode::HostGw | Mode::Bare => None,
        }
    }

    /// Environment set on both hosts' kolach-dataplaned besides the lab's own.
    pub fn dataplaned_env(self) -> &'static [(&'static str, &'static str)] {
        self.ask().map_or(&[], |a| a.env)
    }

    /// Whether host1's DataplaneStatus.mode shows what the mode asked
    /// dataplaned for (a dataplaned that ignores the variable, or cannot do
    /// what it asks, would just measure something else).
    pub fn dataplane_mode_confirms(self, dataplane_mode: Option<&str>) -> bool {
        self.ask()
            .is_none_or(|a| dataplane_mode.is_some_and(|m| m.contains(a.shows)))
    }

    /// Why the dataplane's mode does not show what this mode asked for, and
    /// what the mode then measures; None when it does.
    pub fn unconfirmed_note(self, dataplane_mode: Option<&str>) -> Option<String> {
        let ask = self.ask()?;
        if self.dataplane_mode_confirms(dataplane_mode) {
            return None;
        }
        let env: Vec<String> = ask.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let env = env.join(" ");
        let seen = dataplane_mode.unwrap_or("unknown");
        let why = match (ask.partly, ask.may_not) {
            (Some((part, means)), _) if seen.contains(part) => means.to_string(),
            (_, Some(may_not)) => format!(
                "{may_not}, or this kolach-dataplaned ignores {env}; either way {self} measures plain udp"
            ),
            (_, None) => format!("this kolach-dataplaned ignores {env}, so {self} measures plain udp"),
        };
        Some(format!(
            "the {self} dataplane's mode {seen:?} does not show {:?} asked for with {env}: {why}",
            ask.shows
        ))
    }
}

/// kolach-dataplaned's variable for `--busy-poll`.
pub const BUSY_POLL_ENV: &str = "KOLACH_BUSY_POLL";

/// How long the udp-busy dataplanes keep polling after the last packet.
/// `ping -i 0.01` (the `BENCH_PING_INTERVAL` default) does not send every
/// 10 ms on a kernel with CONFIG_HZ=250: its sleeps end on the 4 ms tick,
/// and it sends every ~16 ms (measured: mean gap 15.9 ms, max 16.3 ms over
/// 50 pings). A 20 ms window therefore expired between two pings whenever
/// one was a few ms late (a trace showed host2's loop going to sleep 20 ms
/// after a ping, just before the next one arrived). 50 ms outlasts three
/// such gaps, so each ping finds the packet loop still polling; with a much
/// longer `BENCH_PING_INTERVAL` the loop sleeps between pings and the mode's
/// round-trip time is udp's again.
pub const BUSY_POLL: &str = "50ms";

/// kolach-dataplaned's variable for `--queues`.
pub const QUEUES_ENV: &str = "KOLACH_QUEUES";

/// udp-queues' queue count: one per CPU the dataplaned may use (one on a
/// one-CPU machine, where the mode is plain udp).
pub const QUEUES: &str = "auto";

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The modes of round `round` (0-based): `modes` rotated by the round, so
/// over any `modes.len()` consecutive rounds every mode runs first,
/// second, ... exactly once.
pub fn round_order(modes: &[Mode], round: usize) -> Vec<Mode> {
    let mut m = modes.to_vec();
    if !m.is_empty() {
        m.rotate_left(round % modes.len());
    }
    m
}

/// The knobs of a run, each also from its `BENCH_*` variable.
#[derive(Clone, Debug, PartialEq, clap::Parser)]
#[command(
    name = "kolach-bench",
    about = "kolach udp, udp with busy polling, udp with a queue per CPU, vxlan, host-gw and the bare underlay measured side by side (make bench)"
)]
pub struct BenchConfig {
    /// Modes to measure, comma-separated, e.g. udp,udp-queues,vxlan (default:
    /// all); vxlan, which the ratios are taken against, is added if left out.
    #[arg(long, env = "BENCH_MODES", value_delimiter = ',', value_parser = Mode::parse,
          default_values_t = Mode::ALL, hide_default_value = true)]
    pub modes: Vec<Mode>,
    /// Rounds; each measures every selected mode once, the order rotated per round.
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 6,
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
        f64::from(self.rounds) * self.selected().len() as f64 * per_mode
    }

    /// The modes to measure: `--modes` in table order, each once, with
    /// [`Mode::REFERENCE`] among them.
    pub fn selected(&self) -> Vec<Mode> {
        Mode::ALL
            .into_iter()
            .filter(|m| *m == Mode::REFERENCE || self.modes.contains(m))
            .collect()
    }

    /// Whether `--modes` left out [`Mode::REFERENCE`] (and
    /// [`selected`](Self::selected) added it).
    pub fn reference_added(&self) -> bool {
        !self.modes.contains(&Mode::REFERENCE)
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
        assert_eq!((d.rounds, d.seconds, d.pings, d.routes), (6, 5, 200, 5000));
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

    /// Over `modes.len()` consecutive rounds from `first`, every mode of
    /// `modes` runs once per round and once in every slot.
    fn assert_rotates(modes: &[Mode], first: usize) {
        let n = modes.len();
        let mut sorted = modes.to_vec();
        sorted.sort();
        for r in first..first + n {
            let mut m = round_order(modes, r);
            m.sort();
            assert_eq!(m, sorted, "round {r} runs every mode once");
        }
        for slot in 0..n {
            let mut seen: Vec<Mode> = (first..first + n)
                .map(|r| round_order(modes, r)[slot])
                .collect();
            seen.sort();
            assert_eq!(seen, sorted, "{modes:?}: slot {slot} from round {first}");
        }
    }

    #[test]
    fn rounds_rotate_every_mode_through_every_slot() {
        let all = Mode::ALL;
        let n = all.len();
        assert_eq!(n, 6);
        assert_eq!(round_order(&all, 0), all.to_vec());
        assert_eq!(
            round_order(&all, 1),
            [
                Mode::UdpBusy,
                Mode::UdpQueues,
                Mode::Vxlan,
                Mode::HostGw,
                Mode::Bare,
                Mode::Udp
            ]
        );
        assert_eq!(round_order(&all, n), round_order(&all, 0));
        assert_eq!(round_order(&all, n + 2), round_order(&all, 2));
        for first in [0, 3] {
            assert_rotates(&all, first);
        }
    }

    #[test]
    fn a_subset_rotates_through_its_own_slots() {
        let sub = [Mode::Udp, Mode::UdpQueues, Mode::Vxlan];
        assert_eq!(
            round_order(&sub, 1),
            [Mode::UdpQueues, Mode::Vxlan, Mode::Udp]
        );
        assert_eq!(round_order(&sub, 3), sub.to_vec());
        for first in [0, 1, 5] {
            assert_rotates(&sub, first);
        }
        assert_eq!(round_order(&[Mode::Vxlan], 7), [Mode::Vxlan]);
        assert!(round_order(&[], 2).is_empty());
    }

    #[test]
    fn modes_select_a_subset_in_table_order() {
        assert_eq!(cfg(&[]).unwrap().selected(), Mode::ALL.to_vec());
        assert!(!cfg(&[]).unwrap().reference_added());
        let c = cfg(&["--modes", "vxlan,udp-queues,udp,udp"]).unwrap();
        assert_eq!(c.selected(), [Mode::Udp, Mode::UdpQueues, Mode::Vxlan]);
        assert!(!c.reference_added());
        // Leaving vxlan out adds it: the ratios are taken against it.
        let c = cfg(&["--modes", "udp-busy"]).unwrap();
        assert!(c.reference_added());
        assert_eq!(c.selected(), [Mode::UdpBusy, Mode::Vxlan]);
        let c = cfg(&["--modes", " underlay , host-gw"]).unwrap();
        assert_eq!(c.selected(), [Mode::Vxlan, Mode::HostGw, Mode::Bare]);
        // The estimate counts the selected modes only.
        let all = cfg(&[]).unwrap().estimate_secs();
        let two = cfg(&["--modes", "udp,vxlan"]).unwrap().estimate_secs();
        assert!((all / two - 3.0).abs() < 1e-9, "{all} vs {two}");
    }

    #[test]
    fn a_bad_mode_name_is_named_with_the_valid_ones() {
        let e = cfg(&["--modes", "udp,udp-fast"]).unwrap_err().to_string();
        assert!(e.contains("\"udp-fast\""), "{e}");
        assert!(
            e.contains("udp, udp-busy, udp-queues, vxlan, host-gw, underlay"),
            "{e}"
        );
        assert!(cfg(&["--modes", "udp,,vxlan"]).is_err());
        assert!(cfg(&["--modes", "UDP"]).is_err());
        assert_eq!(Mode::parse("udp-queues"), Ok(Mode::UdpQueues));
        for m in Mode::ALL {
            assert_eq!(Mode::parse(m.name()), Ok(m));
        }
    }

    #[test]
    fn mode_names_backends_and_env() {
        let names: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "udp",
                "udp-busy",
                "udp-queues",
                "vxlan",
                "host-gw",
                "underlay"
            ]
        );
        assert_eq!(Mode::UdpBusy.to_string(), "udp-busy");
        assert_eq!(Mode::UdpBusy.backend(), Some(Backend::Udp));
        assert_eq!(Mode::UdpQueues.backend(), Some(Backend::Udp));
        assert_eq!(Mode::Udp.backend(), Some(Backend::Udp));
        assert_eq!(
            Mode::UdpBusy.dataplaned_env(),
            &[("KOLACH_BUSY_POLL", "50ms")]
        );
        assert_eq!(
            Mode::UdpQueues.dataplaned_env(),
            &[("KOLACH_QUEUES", "auto")]
        );
        for m in Mode::ALL
            .into_iter()
            .filter(|&m| m != Mode::UdpBusy && m != Mode::UdpQueues)
        {
            assert!(m.dataplaned_env().is_empty(), "{m}");
            assert_eq!(m.ask(), None, "{m}");
        }
    }

    #[test]
    fn udp_busy_is_confirmed_by_busy_poll_in_the_status() {
        let busy = "offload (tun-tso, tun-uso, udp-gso, udp-gro), busy-poll 50ms";
        assert!(Mode::UdpBusy.dataplane_mode_confirms(Some(busy)));
        assert_eq!(Mode::UdpBusy.unconfirmed_note(Some(busy)), None);
        assert!(!Mode::UdpBusy.dataplane_mode_confirms(Some("offload (tun-tso)")));
        assert!(!Mode::UdpBusy.dataplane_mode_confirms(None));
        let note = Mode::UdpBusy
            .unconfirmed_note(Some("offload (tun-tso)"))
            .unwrap();
        assert!(note.contains("ignores KOLACH_BUSY_POLL=50ms"), "{note}");
        assert!(note.contains("udp-busy measures plain udp"), "{note}");
        assert!(Mode::Udp.dataplane_mode_confirms(Some("offload (tun-tso)")));
        assert_eq!(Mode::Udp.unconfirmed_note(None), None);
        assert!(Mode::Bare.dataplane_mode_confirms(None));
    }

    #[test]
    fn udp_queues_is_confirmed_by_queues_by_cpu_in_the_status() {
        let q = Mode::UdpQueues;
        let by_cpu = "offload (tun-tso, tun-uso, udp-gso, udp-gro), 2 queues by cpu";
        assert!(q.dataplane_mode_confirms(Some(by_cpu)));
        assert!(q.dataplane_mode_confirms(Some(
            "batch (sendmmsg, recvmmsg), 8 queues by cpu, busy-poll 1ms"
        )));
        assert_eq!(q.unconfirmed_note(Some(by_cpu)), None);
        assert!(!q.dataplane_mode_confirms(None));
        // The steering program refused: queues, but not by CPU.
        let by_flow = "offload (tun-tso, tun-uso, udp-gso, udp-gro), 2 queues by flow";
        assert!(!q.dataplane_mode_confirms(Some(by_flow)));
        let note = q.unconfirmed_note(Some(by_flow)).unwrap();
        assert!(note.contains("by flow"), "{note}");
        assert!(note.contains("CAP_BPF"), "{note}");
        assert!(!note.contains("plain udp"), "{note}");
        // One CPU (auto = one queue) or a dataplaned without --queues: no
        // queues in the mode at all, the mode measures plain udp.
        let one = "offload (tun-tso, tun-uso, udp-gso, udp-gro)";
        assert!(!q.dataplane_mode_confirms(Some(one)));
        let note = q.unconfirmed_note(Some(one)).unwrap();
        assert!(note.contains("one-CPU machine"), "{note}");
        assert!(note.contains("ignores KOLACH_QUEUES=auto"), "{note}");
        assert!(note.contains("udp-queues measures plain udp"), "{note}");
        assert!(note.contains("\"queues by cpu\""), "{note}");
    }

    /// CONFIG_HZ=250: ping's sleeps end on a 4 ms tick.
    const KERNEL_TICK_MS: f64 = 4.0;

    #[test]
    fn busy_polling_outlasts_the_real_gap_between_two_pings() {
        let interval_ms = cfg(&[]).unwrap().ping_interval * 1e3;
        // `ping -i 0.01` sent every ~16 ms: the interval rounded up to the
        // tick, plus a tick.
        let gap_ms = (interval_ms / KERNEL_TICK_MS).ceil() * KERNEL_TICK_MS + KERNEL_TICK_MS;
        assert_eq!(gap_ms, 16.0);
        let busy_ms: f64 = BUSY_POLL.trim_end_matches("ms").parse().unwrap();
        // A ping delayed by as much as a whole gap must still find the loop
        // polling.
        assert!(busy_ms >= 2.0 * gap_ms, "{BUSY_POLL} vs a {gap_ms} ms gap");
        assert!(
            busy_ms >= 3.0 * interval_ms,
            "{BUSY_POLL} vs -i {interval_ms} ms"
        );
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
