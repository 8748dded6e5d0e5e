//! Small statistics for benchmark samples.

use std::time::Duration;

/// Latency percentiles, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Nearest-rank percentiles of `samples` (which it sorts). Exact, where a histogram
/// (hdrhistogram) reports the top of a value's bucket (5000 us reads 5003 at three
/// significant digits). The benchmarks keep their samples anyway (tens of thousands by
/// default), and sorting them once is cheap.
pub fn percentiles(samples: &mut [Duration]) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1].as_secs_f64() * 1e6
    };
    Percentiles { p50: at(0.50), p99: at(0.99) }
}

/// `x` to two decimals, for JSON reports.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Items per second.
pub fn rate(items: usize, elapsed: Duration) -> f64 {
    items as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        assert_eq!(percentiles(&mut samples), Percentiles { p50: 50.0, p99: 99.0 });
        assert_eq!(percentiles(&mut []), Percentiles { p50: 0.0, p99: 0.0 });
        assert_eq!(rate(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(round2(1.23456), 1.23);
    }
}
