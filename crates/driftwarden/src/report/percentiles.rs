//! Percentiles of delays in bounded memory: exact while there are few, then
//! a log-scale histogram with 1 % wide buckets.

use super::Latency;

/// Samples kept exactly before switching to the histogram.
const EXACT: usize = 10_000;

/// Smallest delay the histogram tells apart from zero, in seconds.
const FLOOR: f64 = 1e-3;

/// Each bucket's upper bound is its lower bound times this.
const GROWTH: f64 = 1.01;

/// Buckets: from 1 ms up past 366 days.
const BUCKETS: usize = 2_600;

/// Delays, in seconds, whose median and 95th percentile are asked for.
#[derive(Debug, Default)]
pub(super) struct Percentiles {
    exact: Vec<f64>,
    histogram: Option<Vec<u64>>,
    count: u64,
}

impl Percentiles {
    /// Adds one delay (a negative one counts as zero).
    pub(super) fn add(&mut self, seconds: f64) {
        let seconds = seconds.max(0.0);
        self.count += 1;
        match &mut self.histogram {
            Some(histogram) => histogram[bucket(seconds)] += 1,
            None if self.exact.len() < EXACT => self.exact.push(seconds),
            None => {
                let mut histogram = vec![0; BUCKETS];
                for sample in self.exact.drain(..).chain([seconds]) {
                    histogram[bucket(sample)] += 1;
                }
                self.exact = Vec::new();
                self.histogram = Some(histogram);
            }
        }
    }

    /// The median and 95th percentile (nearest rank); exact up to 10 000
    /// delays, within 1 % beyond.
    pub(super) fn latency(&self) -> Latency {
        Latency {
            count: self.count,
            p50_seconds: self.quantile(0.50),
            p95_seconds: self.quantile(0.95),
        }
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        match &self.histogram {
            None => {
                let mut sorted = self.exact.clone();
                sorted.sort_by(f64::total_cmp);
                usize::try_from(rank - 1)
                    .ok()
                    .and_then(|i| sorted.get(i))
                    .copied()
            }
            Some(histogram) => {
                let mut seen = 0;
                histogram.iter().enumerate().find_map(|(i, n)| {
                    seen += n;
                    (seen >= rank).then(|| middle(i))
                })
            }
        }
    }
}

/// The bucket of a delay: 0 below [`FLOOR`], then 1 % wide.
fn bucket(seconds: f64) -> usize {
    if seconds < FLOOR {
        return 0;
    }
    let i = ((seconds / FLOOR).ln() / GROWTH.ln()).floor() as usize + 1;
    i.min(BUCKETS - 1)
}

/// A delay standing for bucket `i`: the geometric middle of its bounds.
fn middle(i: usize) -> f64 {
    if i == 0 {
        return 0.0;
    }
    FLOOR * GROWTH.powf(i as f64 - 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_delays_give_exact_nearest_rank_percentiles() {
        let mut p = Percentiles::default();
        assert_eq!(p.latency().p50_seconds, None);
        for s in [5.0, 1.0, 3.0, 2.0, 4.0] {
            p.add(s);
        }
        let latency = p.latency();
        assert_eq!(latency.count, 5);
        assert_eq!(latency.p50_seconds, Some(3.0));
        assert_eq!(latency.p95_seconds, Some(5.0));
    }

    #[test]
    fn many_delays_stay_within_one_percent_in_fixed_memory() {
        let mut p = Percentiles::default();
        for i in 1..=100_000u32 {
            p.add(f64::from(i));
        }
        assert!(p.exact.is_empty());
        assert_eq!(p.histogram.as_ref().map(Vec::len), Some(BUCKETS));
        let latency = p.latency();
        let p50 = latency.p50_seconds.expect("p50");
        let p95 = latency.p95_seconds.expect("p95");
        assert!((p50 / 50_000.0 - 1.0).abs() < 0.01, "{p50}");
        assert!((p95 / 95_000.0 - 1.0).abs() < 0.01, "{p95}");
        assert_eq!(latency.count, 100_000);
    }
}
