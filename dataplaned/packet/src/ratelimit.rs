//! A token bucket, for the ICMP errors the udp backend answers with: like the
//! kernel's own `icmp_msgs_per_sec` / `icmp_msgs_burst`, so that a pod
//! sending to unleased addresses as fast as it can does not make the
//! dataplane write an answer for every packet.

use std::time::{Duration, Instant};

/// ICMP errors per second and burst, the kernel's defaults.
pub const ICMP_PER_SEC: u32 = 1000;
pub const ICMP_BURST: u32 = 50;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_sec: u32,
    burst: u32,
    tokens: u32,
    /// When the tokens were last topped up (advanced by whole tokens only,
    /// so no fraction of one is lost).
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        TokenBucket {
            per_sec: per_sec.max(1),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token if there is one.
    #[inline]
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        let earned = elapsed.as_nanos() * u128::from(self.per_sec) / 1_000_000_000;
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned).min(self.burst);
            let spent = u64::from(earned) * 1_000_000_000 / u64::from(self.per_sec);
            self.last = if self.tokens == self.burst {
                now
            } else {
                self.last + Duration::from_nanos(spent)
            };
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(b: &mut TokenBucket, now: Instant, n: u32) -> u32 {
        (0..n).filter(|_| b.allow(now)).count() as u32
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 50, t0);
        assert_eq!(allowed(&mut b, t0, 200), 50, "the burst");
        assert_eq!(allowed(&mut b, t0 + Duration::from_micros(999), 10), 0);
        assert_eq!(allowed(&mut b, t0 + Duration::from_millis(1), 10), 1);
        // One second at full demand: the rate, not more.
        let mut total = 0;
        for ms in 2..=1001 {
            total += allowed(&mut b, t0 + Duration::from_millis(ms), 10);
        }
        assert_eq!(total, 1000);
    }

    #[test]
    fn fractions_of_a_token_are_kept_and_idle_time_refills_only_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 50, t0);
        assert_eq!(allowed(&mut b, t0, 50), 50);
        // 0.6 ms twice earns one token, not zero.
        assert!(!b.allow(t0 + Duration::from_micros(600)));
        assert!(b.allow(t0 + Duration::from_micros(1200)));
        // A long pause fills the bucket to the burst and no further.
        assert_eq!(allowed(&mut b, t0 + Duration::from_secs(60), 500), 50);
        // A clock that seems to go back earns nothing and breaks nothing.
        assert!(!b.allow(t0));
    }
}
