//! Percentiles, summaries and ratios: pure functions, so the numbers in the report can be
//! checked by unit tests rather than trusted.

use serde::Serialize;

/// Nearest-rank percentile `p` (0–100) of `sorted` (ascending); `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // The epsilon keeps float error (99.9% of 1000 = 999.000…1) from skipping a rank.
    let rank = (p / 100.0 * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Sorts a copy of `values` (NaN-free) ascending.
pub fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The median, min and max of one measurement's runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// The median (mean of the two middle values for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// How many runs.
    pub n: usize,
}

/// Summarizes the runs of one measurement; `None` when there are none.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let s = sorted(values);
    let n = s.len();
    let (first, last) = (s.first()?, s.last()?);
    let median = if n % 2 == 1 {
        *s.get(n / 2)?
    } else {
        (s.get(n / 2 - 1)? + s.get(n / 2)?) / 2.0
    };
    Some(Summary {
        median,
        min: *first,
        max: *last,
        n,
    })
}

/// Which way a measurement is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Throughput: more is better; the ratio is Partita / Redis.
    Higher,
    /// Latency, time, lag: less is better; the ratio is Redis / Partita.
    Lower,
}

/// A ratio where above 1 means Partita wins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ratio {
    /// A finite ratio.
    Value(f64),
    /// Partita measured 0 where Redis measured more (lag, entries behind): Partita wins.
    PartitaZero,
    /// Redis measured 0 where Partita measured more: Redis wins (ratio 0).
    RedisZero,
}

impl Ratio {
    /// The ratio as a number for comparisons: infinity when Partita measured zero.
    pub fn value(self) -> f64 {
        match self {
            Ratio::Value(v) => v,
            Ratio::PartitaZero => f64::INFINITY,
            Ratio::RedisZero => 0.0,
        }
    }

    /// For tables: two decimals, `∞` for a zero on Partita's side.
    pub fn display(self) -> String {
        match self {
            Ratio::Value(v) => format!("{v:.2}"),
            Ratio::PartitaZero => "∞ (Partita 0)".into(),
            Ratio::RedisZero => "0 (Redis 0)".into(),
        }
    }

    /// For JSON: a number, or the string `"inf"`.
    pub fn json(self) -> serde_json::Value {
        match self {
            Ratio::Value(v) => serde_json::json!(v),
            Ratio::PartitaZero => serde_json::json!("inf"),
            Ratio::RedisZero => serde_json::json!(0.0),
        }
    }
}

/// The ratio of two medians, oriented so that above 1 means Partita wins. Both zero is a tie (1).
pub fn ratio(redis: f64, partita: f64, better: Better) -> Ratio {
    let (num, den) = match better {
        Better::Higher => (partita, redis),
        Better::Lower => (redis, partita),
    };
    if den == 0.0 {
        return if num == 0.0 {
            Ratio::Value(1.0)
        } else if better == Better::Lower {
            Ratio::PartitaZero
        } else {
            Ratio::RedisZero
        };
    }
    if num == 0.0 && better == Better::Lower {
        return Ratio::RedisZero;
    }
    Ratio::Value(num / den)
}

/// Latency percentiles of one load, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

/// p50, p99 and p99.9 of samples in nanoseconds; zeros when there are none.
pub fn latency(ns: &[u64]) -> Latency {
    let mut v: Vec<u64> = ns.to_vec();
    v.sort_unstable();
    let pick = |p: f64| -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let rank = (p / 100.0 * v.len() as f64 - 1e-9).ceil() as usize;
        v.get(rank.clamp(1, v.len()) - 1).copied().unwrap_or(0) as f64 / 1e6
    };
    Latency {
        p50_ms: pick(50.0),
        p99_ms: pick(99.0),
        p999_ms: pick(99.9),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summaries_of_odd_and_even_counts() {
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = summarize(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn ratios_are_oriented_so_that_above_one_means_partita_wins() {
        assert_eq!(ratio(100.0, 150.0, Better::Higher), Ratio::Value(1.5));
        assert_eq!(ratio(2.0, 1.0, Better::Lower), Ratio::Value(2.0));
        assert_eq!(ratio(0.0, 0.0, Better::Lower), Ratio::Value(1.0));
        assert_eq!(ratio(5.0, 0.0, Better::Lower), Ratio::PartitaZero);
        assert_eq!(ratio(0.0, 5.0, Better::Lower), Ratio::RedisZero);
        assert_eq!(ratio(0.0, 5.0, Better::Higher), Ratio::RedisZero);
        assert!(ratio(5.0, 0.0, Better::Lower).value() > 1.0);
        assert_eq!(Ratio::PartitaZero.json(), serde_json::json!("inf"));
    }

    #[test]
    fn latency_percentiles_in_milliseconds() {
        let ns: Vec<u64> = (1..=1000).map(|i| i * 1_000_000).collect();
        let l = latency(&ns);
        assert_eq!((l.p50_ms, l.p99_ms, l.p999_ms), (500.0, 990.0, 999.0));
        assert_eq!(latency(&[]).p50_ms, 0.0);
    }
}
