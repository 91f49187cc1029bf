//! Exponential backoff for retries against etcd and the dataplane socket.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The dataplane reconnect schedule (COMMON contract): 100 ms doubling to 1 s.
    pub fn dataplane() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// etcd retries: 200 ms doubling to 5 s.
    pub fn etcd() -> Self {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(5))
    }

    /// The delay before the next attempt; doubles each call up to the max.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Sleeps for the next delay.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_and_resets() {
        let mut b = Backoff::dataplane();
        let ms: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_sleeps_the_schedule() {
        let mut b = Backoff::dataplane();
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            b.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(2500));
    }
}
