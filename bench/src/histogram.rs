//! A small HDR-style latency histogram: log-linear buckets over microseconds with 64
//! sub-buckets per power of two, so every recorded value is kept within 1/64 (≈1.6 %) of its
//! true value from 1 µs to hours, in a fixed 30 KiB of counters. Histograms merge by adding
//! counts, so each virtual user records into its own and they are combined at the end.

use std::time::Duration;

/// Values below this are counted exactly (one bucket per microsecond).
const LINEAR: u64 = 128;
/// Sub-buckets per power of two above [`LINEAR`].
const SUB: u64 = 64;
/// Enough buckets for every `u64` microsecond value.
const BUCKETS: usize = (LINEAR + 58 * SUB) as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: vec![0; BUCKETS], total: 0, max_us: 0 }
    }
}

fn index(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let bits = 64 - u64::from(us.leading_zeros());
    let shift = bits - 7;
    let mantissa = us >> shift; // in [64, 128)
    (LINEAR + (shift - 1) * SUB + (mantissa - SUB)) as usize
}

/// The middle of bucket `i`, in microseconds.
fn value(i: usize) -> f64 {
    let i = i as u64;
    if i < LINEAR {
        return i as f64;
    }
    let shift = (i - LINEAR) / SUB + 1;
    let mantissa = (i - LINEAR) % SUB + SUB;
    let low = mantissa << shift;
    low as f64 + ((1u64 << shift) as f64 - 1.0) / 2.0
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let i = index(us).min(BUCKETS - 1);
        self.counts[i] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The latency at quantile `q` (0.0–1.0) in milliseconds; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(value(i).min(self.max_us as f64) / 1000.0);
            }
        }
        Some(self.max_us as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_precise() {
        let mut last = 0;
        for us in (0..2_000_000u64).step_by(7) {
            let i = index(us);
            assert!(i >= last, "index went down at {us}");
            last = i;
            let v = value(i);
            assert!((v - us as f64).abs() <= us as f64 / 64.0 + 1.0, "{us} µs landed at {v}");
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let mut h = Histogram::default();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile_ms(0.5).expect("p50");
        let p99 = h.quantile_ms(0.99).expect("p99");
        assert!((p50 - 500.0).abs() < 10.0, "p50 {p50}");
        assert!((p99 - 990.0).abs() < 20.0, "p99 {p99}");
        let mut other = Histogram::default();
        other.record(Duration::from_secs(5));
        h.merge(&other);
        assert_eq!(h.count(), 1001);
        assert!((h.quantile_ms(1.0).expect("max") - 5000.0).abs() < 1.0);
    }
}
