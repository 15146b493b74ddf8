//! A fixed-bucket latency histogram recorded with atomics: one relaxed `fetch_add` on the
//! bucket and one on the sum per observation, no allocation, no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets in microseconds (the last bucket, `+Inf`, is implicit).
pub const BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

const N: usize = BOUNDS_US.len() + 1;

/// Latencies in fixed buckets (100 µs .. 10 s, then `+Inf`).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; N],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    /// Records one observation.
    #[inline]
    pub fn record(&self, latency: Duration) {
        let us = latency.as_micros().min(u64::MAX as u128) as u64;
        let i = BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(N - 1);
        // `position` is at most N - 2 and the fallback N - 1: always in bounds.
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// A copy of the counts.
    pub fn read(&self) -> HistogramSnapshot {
        let mut counts = [0u64; N];
        for (c, b) in counts.iter_mut().zip(&self.buckets) {
            *c = b.load(Ordering::Relaxed);
        }
        HistogramSnapshot {
            counts: counts.to_vec(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// A copy of a [`LatencyHistogram`]: per-bucket (not cumulative) counts, one per bound of
/// [`BOUNDS_US`] plus the `+Inf` bucket, and the sum in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HistogramSnapshot {
    /// Observations per bucket (`BOUNDS_US.len() + 1` entries; the last is `+Inf`).
    pub counts: Vec<u64>,
    /// Sum of all observations in microseconds.
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s counts to these (aggregating workers or nodes).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }

    /// Per-bucket (not cumulative) `(upper bound in seconds, count)` pairs, the last bound
    /// `f64::MAX`: what `prometheus-client`'s `encode_histogram` takes (it adds the counts up
    /// itself and writes `f64::MAX` as `le="+Inf"`).
    pub fn encoder_buckets(&self) -> Vec<(f64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let bound = BOUNDS_US
                    .get(i)
                    .map(|b| *b as f64 / 1e6)
                    .unwrap_or(f64::MAX);
                (bound, *c)
            })
            .collect()
    }

    /// Cumulative `(upper bound in seconds, count)` pairs, `+Inf` last, as Prometheus wants.
    pub fn cumulative_seconds(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        let mut out = Vec::with_capacity(N);
        for (i, c) in self.counts.iter().enumerate() {
            acc += c;
            let bound = BOUNDS_US
                .get(i)
                .map(|b| *b as f64 / 1e6)
                .unwrap_or(f64::INFINITY);
            out.push((bound, acc));
        }
        out
    }

    /// The `q` quantile (0..=1) in microseconds, as the upper bound of the bucket it falls
    /// in (an over-estimate by at most one bucket); `None` without observations. The `+Inf`
    /// bucket reports the largest finite bound.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut acc = 0;
        for (i, c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= rank {
                return Some(BOUNDS_US.get(i).copied().unwrap_or(BOUNDS_US[N - 2]));
            }
        }
        Some(BOUNDS_US[N - 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_sum_and_quantiles() {
        let h = LatencyHistogram::default();
        for _ in 0..90 {
            h.record(Duration::from_micros(80));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(40));
        }
        h.record(Duration::from_secs(60));
        let s = h.read();
        assert_eq!(s.count(), 101);
        assert_eq!(s.counts[0], 90);
        assert_eq!(s.counts[8], 10); // <= 50 ms
        assert_eq!(s.counts[16], 1); // +Inf
        assert_eq!(s.sum_us, 90 * 80 + 10 * 40_000 + 60_000_000);
        assert_eq!(s.quantile_us(0.5), Some(100));
        assert_eq!(s.quantile_us(0.95), Some(50_000));
        assert_eq!(s.quantile_us(1.0), Some(10_000_000));
        let cum = s.cumulative_seconds();
        assert_eq!(cum.last(), Some(&(f64::INFINITY, 101)));
        assert_eq!(cum[0], (0.0001, 90));
        let per = s.encoder_buckets();
        assert_eq!(per.len(), cum.len());
        assert_eq!(per.last(), Some(&(f64::MAX, 1)));
        assert_eq!(per.iter().map(|(_, c)| c).sum::<u64>(), 101);
        assert_eq!(per[8], (0.05, 10));
        let mut m = s.clone();
        m.merge(&s);
        assert_eq!(m.count(), 202);
        assert_eq!(HistogramSnapshot::default().quantile_us(0.5), None);
    }
}
