//! `--busy-poll`: trading CPU for round-trip time in the udp backend.
//!
//! By default the packet loop sleeps in `poll()` whenever the TUN and the
//! socket are empty, and every packet that arrives after a quiet moment pays
//! for waking a thread, often on an idle CPU that must be woken first (tens
//! of microseconds on a virtual machine whose halted vCPUs are not polled).
//! With a busy-poll window the loop's one thread keeps trying both fds
//! without sleeping until the window passed without a packet, so a packet
//! that arrives meanwhile is picked up at once. This is the trade
//! DPDK, VPP and the kernel's own `SO_BUSY_POLL` make: while traffic flows
//! (any packet within the window) the thread uses a CPU, yielding it to
//! whatever else wants to run; after the window it sleeps as before.
//!
//! This module holds the pure parts: the flag's parser and display, and the
//! clock that decides when the loop goes to sleep.

use std::fmt;
use std::time::{Duration, Instant};

/// The longest window accepted: beyond it the loop would effectively never
/// sleep, which is better said with a big, visible number than by accident.
pub const MAX_WINDOW: Duration = Duration::from_secs(10);

/// `--busy-poll` as given: `0` (off), or a number with a unit `us`, `ms` or
/// `s` (`50us`, `20ms`, `1s`).
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 0, 200us, 20ms or 1s"))?;
    let d = match unit {
        "us" | "µs" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "" => return Err(format!("{s:?} needs a unit: us, ms or s (0 turns it off)")),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use us, ms or s)")),
    };
    if d > MAX_WINDOW {
        return Err(format!("{s:?} is longer than the maximum, 10s"));
    }
    Ok(d)
}

/// A window as the flag would say it: `20ms`, `250us`, `2s`, `0`.
pub struct Window(pub Duration);

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_micros();
        match us {
            0 => f.write_str("0"),
            _ if us % 1_000_000 == 0 => write!(f, "{}s", us / 1_000_000),
            _ if us % 1_000 == 0 => write!(f, "{}ms", us / 1_000),
            _ => write!(f, "{us}us"),
        }
    }
}

/// When the busy-polling loop may sleep: once `window` passed since the
/// last packet moved (or since it woke up).
#[derive(Debug, Clone, Copy)]
pub struct IdleClock {
    window: Duration,
    last: Instant,
}

impl IdleClock {
    pub fn new(window: Duration, now: Instant) -> Self {
        IdleClock { window, last: now }
    }

    /// Packets moved (or the loop just woke up for them) at `now`.
    pub fn busy(&mut self, now: Instant) {
        self.last = now;
    }

    /// Whether nothing moved for the whole window.
    pub fn may_sleep(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zero_and_units() {
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("200us"), Ok(Duration::from_micros(200)));
        assert_eq!(parse("200µs"), Ok(Duration::from_micros(200)));
        assert_eq!(parse(" 20ms "), Ok(Duration::from_millis(20)));
        assert_eq!(parse("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse("10s"), Ok(MAX_WINDOW));
        assert_eq!(parse("0ms"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_what_it_cannot_read_and_says_why() {
        assert_eq!(
            parse("20"),
            Err(r#""20" needs a unit: us, ms or s (0 turns it off)"#.into())
        );
        assert_eq!(
            parse("20m"),
            Err(r#""20m": unknown unit "m" (use us, ms or s)"#.into())
        );
        assert_eq!(
            parse("fast"),
            Err(r#""fast" is not a duration such as 0, 200us, 20ms or 1s"#.into())
        );
        assert!(parse("-5ms").unwrap_err().contains("not a duration"));
        assert_eq!(
            parse("11s"),
            Err(r#""11s" is longer than the maximum, 10s"#.into())
        );
        assert!(parse("99999999999999999999ms").is_err());
    }

    #[test]
    fn displays_as_the_flag_would_say_it() {
        for s in ["0", "250us", "20ms", "2s", "1500us", "1001ms"] {
            assert_eq!(Window(parse(s).unwrap()).to_string(), s);
        }
    }

    #[test]
    fn sleeps_only_after_a_quiet_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = IdleClock::new(ms(20), t0);
        assert!(!c.may_sleep(t0));
        assert!(!c.may_sleep(t0 + ms(19)));
        assert!(c.may_sleep(t0 + ms(20)));
        c.busy(t0 + ms(15));
        assert!(!c.may_sleep(t0 + ms(30)));
        assert!(c.may_sleep(t0 + ms(35)));
        // A clock read before the last packet (another thread's Instant)
        // never counts as quiet.
        assert!(!c.may_sleep(t0));
    }

    #[test]
    fn a_zero_window_sleeps_at_once() {
        let t0 = Instant::now();
        let c = IdleClock::new(Duration::ZERO, t0);
        assert!(c.may_sleep(t0));
    }
}
