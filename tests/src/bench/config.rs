//! What the bench measures and how long: the six modes (and what two of them
//! ask of kolach-dataplaned beyond its defaults), the `BENCH_*` environment
//! variables, and the order the selected modes take in each round.

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Result};

use kolach_testkit::lab::backend::Backend;

/// One way pods (or hosts, for the bare underlay) reach each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// The udp backend with kolach-dataplaned's defaults (`--queues auto`:
    /// a TUN queue, socket and pinned loop thread per CPU).
    Udp,
    /// The udp backend with both dataplanes busy polling
    /// (`KOLACH_BUSY_POLL=`[`BUSY_POLL`]): round-trip time bought with CPU.
    UdpBusy,
    /// The udp backend with one TUN queue, socket and loop thread
    /// (`KOLACH_QUEUES=`[`ONE_QUEUE`]): kolach-dataplaned's previous default,
    /// beside [`Mode::Udp`]'s per-CPU queues for comparison.
    UdpOneQueue,
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
    /// How host1's DataplaneStatus.mode reads once the dataplane runs so.
    pub shows: Shows,
}

/// A test of host1's DataplaneStatus.mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shows {
    /// The mode contains this part.
    Contains(&'static str),
    /// The mode does not contain this part.
    Lacks(&'static str),
}

impl Shows {
    /// Whether `dataplane_mode` passes the test.
    pub fn holds_for(self, dataplane_mode: &str) -> bool {
        match self {
            Shows::Contains(part) => dataplane_mode.contains(part),
            Shows::Lacks(part) => !dataplane_mode.contains(part),
        }
    }

    /// How a mode for which the test fails reads, e.g. `does not show "busy-poll"`.
    fn failed(self) -> String {
        match self {
            Shows::Contains(part) => format!("does not show {part:?}"),
            Shows::Lacks(part) => format!("still shows {part:?}"),
        }
    }
}

impl Mode {
    /// Every mode, in table order.
    pub const ALL: [Mode; 6] = [
        Mode::Udp,
        Mode::UdpBusy,
        Mode::UdpOneQueue,
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
            Mode::UdpOneQueue => "udp-1queue",
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
            Mode::Udp | Mode::UdpBusy | Mode::UdpOneQueue => Some(Backend::Udp),
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
                shows: Shows::Contains("busy-poll"),
            }),
            // With several queues the mode ends `, N queues by cpu` (or `by
            // flow`); with one it names no queues.
            Mode::UdpOneQueue => Some(Ask {
                env: &[(QUEUES_ENV, ONE_QUEUE)],
                shows: Shows::Lacks("queues"),
            }),
            Mode::Udp | Mode::Vxlan | Mode::HostGw | Mode::Bare => None,
        }
    }

    /// Environment set on both hosts' kolach-dataplaned besides the lab's own.
    pub fn dataplaned_env(self) -> &'static [(&'static str, &'static str)] {
        self.ask().map_or(&[], |a| a.env)
    }

    /// Whether host1's DataplaneStatus.mode shows what the mode asked
    /// dataplaned for (a dataplaned that ignores the variable would just
    /// measure its defaults again).
    pub fn dataplane_mode_confirms(self, dataplane_mode: Option<&str>) -> bool {
        self.ask()
            .is_none_or(|a| dataplane_mode.is_some_and(|m| a.shows.holds_for(m)))
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
        Some(match dataplane_mode {
            Some(seen) => format!(
                "the {self} dataplane's mode {seen:?} {}: this kolach-dataplaned ignores {env}, \
                 so {self} measures the default per-CPU udp, as the udp row does",
                ask.shows.failed()
            ),
            None => format!(
                "host1's status gave no packet I/O mode, so nothing confirms that the {self} \
                 dataplaned took {env}"
            ),
        })
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

/// kolach-dataplaned's variable for `--queues` (default `auto`: one queue
/// per CPU it may use, at most 8).
pub const QUEUES_ENV: &str = "KOLACH_QUEUES";

/// udp-1queue's queue count: kolach-dataplaned's default before `auto`. On
/// a one-CPU machine `auto` is one queue too, and udp-1queue measures what
/// udp does.
pub const ONE_QUEUE: &str = "1";

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
    about = "kolach udp (a queue per CPU), udp with busy polling, udp with one queue, vxlan, host-gw and the bare underlay measured side by side (make bench)"
)]
pub struct BenchConfig {
    /// Modes to measure, comma-separated, e.g. udp,udp-1queue,vxlan (default:
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
    /// Pods ADDed then DELeted through the CNI plugin on a lab of their own (0 skips).
    #[arg(long, env = "BENCH_PODS", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(0..=250))]
    pub pods: u32,
    /// CNI calls at a time in the pods measurement.
    #[arg(long, env = "BENCH_POD_PARALLEL", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub pod_parallel: u32,
    /// Addresses taken from controld (no wiring) to read its memory then.
    #[arg(long, env = "BENCH_ALLOCATIONS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(0..=16_000))]
    pub allocations: u32,
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
        // The relay floor's two placements take a ping run each.
        let per_round = self.selected().len() as f64 * per_mode + 2.0 * ping;
        f64::from(self.rounds) * per_round
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
                Mode::UdpOneQueue,
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
        let sub = [Mode::Udp, Mode::UdpOneQueue, Mode::Vxlan];
        assert_eq!(
            round_order(&sub, 1),
            [Mode::UdpOneQueue, Mode::Vxlan, Mode::Udp]
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
        let c = cfg(&["--modes", "vxlan,udp-1queue,udp,udp"]).unwrap();
        assert_eq!(c.selected(), [Mode::Udp, Mode::UdpOneQueue, Mode::Vxlan]);
        assert!(!c.reference_added());
        // Leaving vxlan out adds it: the ratios are taken against it.
        let c = cfg(&["--modes", "udp-busy"]).unwrap();
        assert!(c.reference_added());
        assert_eq!(c.selected(), [Mode::UdpBusy, Mode::Vxlan]);
        let c = cfg(&["--modes", " underlay , host-gw"]).unwrap();
        assert_eq!(c.selected(), [Mode::Vxlan, Mode::HostGw, Mode::Bare]);
        // The estimate counts the selected modes only, plus the relay floor:
        // per round and mode 3 iperf3 runs of 5 + 1 s and 200 pings at 10 ms
        // (+1 s), i.e. 21 s; the floor's two ping runs, 6 s per round.
        let all = cfg(&[]).unwrap().estimate_secs();
        let two = cfg(&["--modes", "udp,vxlan"]).unwrap().estimate_secs();
        assert!((all - 6.0 * (6.0 * 21.0 + 6.0)).abs() < 1e-9, "{all}");
        assert!((two - 6.0 * (2.0 * 21.0 + 6.0)).abs() < 1e-9, "{two}");
    }

    #[test]
    fn a_bad_mode_name_is_named_with_the_valid_ones() {
        let e = cfg(&["--modes", "udp,udp-fast"]).unwrap_err().to_string();
        assert!(e.contains("\"udp-fast\""), "{e}");
        assert!(
            e.contains("udp, udp-busy, udp-1queue, vxlan, host-gw, underlay"),
            "{e}"
        );
        assert!(cfg(&["--modes", "udp,,vxlan"]).is_err());
        assert!(cfg(&["--modes", "UDP"]).is_err());
        assert_eq!(Mode::parse("udp-1queue"), Ok(Mode::UdpOneQueue));
        assert!(cfg(&["--modes", "udp-queues"]).is_err());
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
                "udp-1queue",
                "vxlan",
                "host-gw",
                "underlay"
            ]
        );
        assert_eq!(Mode::UdpBusy.to_string(), "udp-busy");
        assert_eq!(Mode::UdpBusy.backend(), Some(Backend::Udp));
        assert_eq!(Mode::UdpOneQueue.backend(), Some(Backend::Udp));
        assert_eq!(Mode::Udp.backend(), Some(Backend::Udp));
        assert_eq!(
            Mode::UdpBusy.dataplaned_env(),
            &[("KOLACH_BUSY_POLL", "50ms")]
        );
        assert_eq!(
            Mode::UdpOneQueue.dataplaned_env(),
            &[("KOLACH_QUEUES", "1")]
        );
        for m in Mode::ALL
            .into_iter()
            .filter(|&m| m != Mode::UdpBusy && m != Mode::UdpOneQueue)
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
        assert!(note.contains("does not show \"busy-poll\""), "{note}");
        assert!(note.contains("ignores KOLACH_BUSY_POLL=50ms"), "{note}");
        assert!(
            note.contains("udp-busy measures the default per-CPU udp"),
            "{note}"
        );
        assert!(Mode::Udp.dataplane_mode_confirms(Some("offload (tun-tso)")));
        assert_eq!(Mode::Udp.unconfirmed_note(None), None);
        assert!(Mode::Bare.dataplane_mode_confirms(None));
    }

    #[test]
    fn udp_1queue_is_confirmed_by_no_queues_in_the_status() {
        let q = Mode::UdpOneQueue;
        // One queue: the mode names no queues, busy polling or not.
        let one = "offload (tun-tso, tun-uso, udp-gso, udp-gro)";
        assert!(q.dataplane_mode_confirms(Some(one)));
        assert!(q.dataplane_mode_confirms(Some("batch (sendmmsg, recvmmsg), busy-poll 1ms")));
        assert_eq!(q.unconfirmed_note(Some(one)), None);
        assert!(!q.dataplane_mode_confirms(None));
        let note = q.unconfirmed_note(None).unwrap();
        assert!(note.contains("no packet I/O mode"), "{note}");
        assert!(note.contains("KOLACH_QUEUES=1"), "{note}");
        // A dataplaned that ignores KOLACH_QUEUES runs its per-CPU default,
        // steered by CPU or, without the eBPF program, by flow.
        for several in [
            "offload (tun-tso, tun-uso, udp-gso, udp-gro), 2 queues by cpu",
            "batch (sendmmsg, recvmmsg), 8 queues by flow",
        ] {
            assert!(!q.dataplane_mode_confirms(Some(several)), "{several}");
            let note = q.unconfirmed_note(Some(several)).unwrap();
            assert!(note.contains("still shows \"queues\""), "{note}");
            assert!(note.contains("ignores KOLACH_QUEUES=1"), "{note}");
            assert!(
                note.contains("udp-1queue measures the default per-CPU udp"),
                "{note}"
            );
            assert!(!note.contains('\n'), "{note}");
        }
        // Plain udp and udp-busy take whatever queues the dataplaned runs.
        for m in [Mode::Udp, Mode::UdpBusy] {
            let busy_queues = "batch (sendmmsg, recvmmsg), 2 queues by cpu, busy-poll 50ms";
            assert!(m.dataplane_mode_confirms(Some(busy_queues)), "{m}");
        }
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
