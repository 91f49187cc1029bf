//! How long snapshot applies take, kept as Prometheus keeps a histogram:
//! fixed buckets with cumulative counts, the sum and the count. Status sends
//! it as it is and controld's `/metrics` renders it. Pure, so it is tested
//! here; the engine observes one duration per applied snapshot.

use std::time::Duration;

use kolach_proto::dataplane as pb;

/// Upper bounds in seconds: from an apply that changes nothing in the kernel
/// (well under a millisecond) to a backend switch that makes devices.
pub const APPLY_BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Observations at or below each of [`APPLY_BOUNDS`]; cumulative, so
    /// one observation counts in its own bucket and every one above it.
    cumulative: [u64; APPLY_BOUNDS.len()],
    /// Seconds.
    sum: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            cumulative: [0; APPLY_BOUNDS.len()],
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, n) in APPLY_BOUNDS.iter().zip(self.cumulative.iter_mut()) {
            if secs <= *bound {
                *n += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// As Status sends it: the listed buckets, without +Inf (that is `count`).
    pub fn to_pb(&self) -> pb::Histogram {
        pb::Histogram {
            buckets: APPLY_BOUNDS
                .iter()
                .zip(self.cumulative)
                .map(|(&upper_bound, cumulative_count)| pb::HistogramBucket {
                    upper_bound,
                    cumulative_count,
                })
                .collect(),
            sum: self.sum,
            count: self.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(h: &Histogram) -> Vec<u64> {
        h.to_pb()
            .buckets
            .iter()
            .map(|b| b.cumulative_count)
            .collect()
    }

    #[test]
    fn empty() {
        let h = Histogram::default();
        let p = h.to_pb();
        assert_eq!(p.buckets.len(), APPLY_BOUNDS.len());
        assert!(p.buckets.iter().all(|b| b.cumulative_count == 0));
        assert_eq!((p.sum, p.count), (0.0, 0));
    }

    #[test]
    fn an_observation_counts_in_its_bucket_and_every_one_above() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(3000)); // 0.003 s: the 0.005 bucket
        assert_eq!(counts(&h), [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
        // On a bound: that bucket (le is "at or below").
        h.observe(Duration::from_millis(1));
        assert_eq!(counts(&h), [0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
        h.observe(Duration::ZERO);
        assert_eq!(counts(&h), [1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3]);
        assert_eq!(h.count(), 3);
        assert!((h.to_pb().sum - 0.004).abs() < 1e-12);
    }

    #[test]
    fn above_the_last_bound_counts_only_in_inf() {
        let mut h = Histogram::default();
        h.observe(Duration::from_secs(3));
        h.observe(Duration::from_millis(200));
        let p = h.to_pb();
        assert_eq!(counts(&h), [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]);
        // +Inf is the count: one more than the last listed bucket.
        assert_eq!(p.count, 2);
        assert_eq!(p.buckets.last().unwrap().upper_bound, 2.5);
        assert!((p.sum - 3.2).abs() < 1e-12);
    }

    #[test]
    fn cumulative_counts_never_fall_and_stay_at_most_the_count() {
        let mut h = Histogram::default();
        for us in [
            1, 400, 700, 2_000, 9_000, 40_000, 90_000, 600_000, 5_000_000,
        ] {
            h.observe(Duration::from_micros(us));
        }
        let p = h.to_pb();
        assert!(p.buckets.windows(2).all(|w| {
            w[0].upper_bound < w[1].upper_bound && w[0].cumulative_count <= w[1].cumulative_count
        }));
        assert!(p.buckets.last().unwrap().cumulative_count <= p.count);
        assert_eq!(p.count, 9);
    }
}
