//! Small statistics and formatting helpers for benchmarks: medians over
//! repetitions, and Ferry/QEMU ratios.

use serde::{Deserialize, Serialize};

/// The median of `values` (mean of the two middle values for an even
/// count); `None` when empty or when a value is NaN.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Median, minimum and maximum of a set of repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Number of values.
    pub n: usize,
    /// Their median.
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Stats {
    /// Summarizes `values`; `None` when empty or when a value is NaN.
    pub fn of(values: &[f64]) -> Option<Stats> {
        let median = median(values)?;
        Some(Stats {
            n: values.len(),
            median,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

impl std::fmt::Display for Stats {
    /// `median (min..max, n=N)`, with the formatter's precision (default 1).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = f.precision().unwrap_or(1);
        write!(
            f,
            "{:.p$} ({:.p$}..{:.p$}, n={})",
            self.median, self.min, self.max, self.n
        )
    }
}

/// Runs `run` `reps` times (passing the repetition index) and collects the
/// results; stops at the first error.
pub fn repeat<T, E>(reps: usize, mut run: impl FnMut(usize) -> Result<T, E>) -> Result<Vec<T>, E> {
    (0..reps).map(&mut run).collect()
}

/// `ours / theirs` formatted as `0.83x`; `n/a` when it is not a finite
/// number (e.g. `theirs` is 0).
pub fn ratio(ours: f64, theirs: f64) -> String {
    let r = ours / theirs;
    if r.is_finite() {
        format!("{r:.2}x")
    } else {
        "n/a".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[1.0, f64::NAN]), None);
        let s = Stats::of(&[4.0, 1.0, 9.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (3, 4.0, 1.0, 9.0));
        assert_eq!(s.to_string(), "4.0 (1.0..9.0, n=3)");
        assert_eq!(format!("{s:.2}"), "4.00 (1.00..9.00, n=3)");
    }

    #[test]
    fn repetitions() {
        let r: Result<Vec<usize>, String> = repeat(3, |i| Ok(i * 10));
        assert_eq!(r.unwrap(), [0, 10, 20]);
        let mut calls = 0;
        let r: Result<Vec<()>, String> = repeat(5, |i| {
            calls += 1;
            if i == 1 { Err("boom".into()) } else { Ok(()) }
        });
        assert_eq!(r.unwrap_err(), "boom");
        assert_eq!(calls, 2);
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(83.0, 100.0), "0.83x");
        assert_eq!(ratio(1.0, 0.0), "n/a");
    }
}
