//! Percentiles of latency samples (nearest rank, the usual choice for small sample counts).

use std::time::Duration;

use serde_json::{json, Value};

/// The `p`th percentile (0 < p <= 100) of `samples` by nearest rank; `None` when empty.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `{"n", "p50_ms", "p99_ms", "max_ms", "min_ms"}` of `samples`.
pub fn latency_json(samples: &[Duration]) -> Value {
    let p = |q| percentile(samples, q).map(ms);
    json!({
        "n": samples.len(),
        "p50_ms": p(50.0),
        "p99_ms": p(99.0),
        "max_ms": p(100.0),
        "min_ms": samples.iter().min().copied().map(ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ms: &[u64]) -> Vec<Duration> {
        ms.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn nearest_rank() {
        let s = d(&[50, 10, 40, 20, 30]);
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_millis(30)));
        assert_eq!(percentile(&s, 99.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&s, 1.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn p99_of_thirty_is_the_slowest_and_p50_the_fifteenth() {
        let s: Vec<Duration> = (1..=30).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&s, 99.0), Some(Duration::from_millis(30)));
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_millis(15)));
    }

    #[test]
    fn json_names_its_fields() {
        let v = latency_json(&d(&[1, 2, 3]));
        assert_eq!(v["n"], 3);
        assert_eq!(v["p50_ms"], 2.0);
        assert_eq!(v["max_ms"], 3.0);
        assert_eq!(v["min_ms"], 1.0);
    }
}
