//! Hotspot (overload) detectors.

use crate::names::{self, UnknownName};
use crate::stats;

/// What a detector looks at for one host.
#[derive(Debug, Clone, Copy)]
pub struct HostLoad<'a> {
    /// CPU requested by the host's VMs divided by its capacity (may exceed 1).
    pub utilization: f64,
    /// The host's utilization history, **newest first**, built as CloudSim's
    /// `PowerHostUtilizationHistory` does: the sum of its current VMs'
    /// histories weighted by VM size / host capacity, with the oldest zero
    /// entries trimmed.
    pub history_newest_first: &'a [f64],
    /// Longest time any of its VMs would take to migrate away, seconds.
    pub max_migration_time_s: f64,
    /// Scheduling interval, seconds.
    pub interval_s: f64,
}

/// A hotspot detector. The adaptive ones fall back to a static threshold
/// while the history is too short, as in CloudSim.
#[derive(Debug, Clone, PartialEq)]
pub enum Detector {
    /// Overloaded when utilization > `threshold` (THR).
    Threshold { threshold: f64 },
    /// Sandpiper (NSDI 2007): overloaded when at least `k` of the last `n`
    /// observations and the one-step AR(1) forecast exceed `threshold`.
    Sandpiper { threshold: f64, k: usize, n: usize },
    /// Inter-quartile range: threshold `1 - safety * IQR(history)`.
    Iqr { safety: f64, fallback: f64 },
    /// Median absolute deviation: threshold `1 - safety * MAD(history)`.
    Mad { safety: f64, fallback: f64 },
    /// Local regression over the last 10 observations, predicted at the end
    /// of the longest migration; overloaded when `safety * prediction >= 1`.
    Lr { safety: f64, fallback: f64 },
    /// Robust local regression (bisquare re-weighting), same rule as `Lr`.
    Lrr { safety: f64, fallback: f64 },
}

/// History needed by IQR and MAD (CloudSim: "12 has been suggested as a safe value").
pub const ADAPTIVE_MIN_HISTORY: usize = 12;
/// Observations the local regressions use.
pub const LR_WINDOW: usize = 10;

/// A detector without its parameters: what policy names spell
/// (`thr`, `iqr`, `mad`, `lr`, `lrr`, `sp`; `sandpiper` also parses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorKind {
    Threshold,
    Iqr,
    Mad,
    Lr,
    Lrr,
    Sandpiper,
}

impl DetectorKind {
    /// Every kind, in the order names are listed.
    pub const ALL: [DetectorKind; 6] = [
        DetectorKind::Threshold,
        DetectorKind::Iqr,
        DetectorKind::Mad,
        DetectorKind::Lr,
        DetectorKind::Lrr,
        DetectorKind::Sandpiper,
    ];

    /// Short name as used in policy names.
    pub fn name(self) -> &'static str {
        match self {
            DetectorKind::Threshold => "thr",
            DetectorKind::Iqr => "iqr",
            DetectorKind::Mad => "mad",
            DetectorKind::Lr => "lr",
            DetectorKind::Lrr => "lrr",
            DetectorKind::Sandpiper => "sp",
        }
    }

    /// The parameter Beloglazov & Buyya recommend (threshold or safety
    /// parameter); Sandpiper's usual threshold.
    pub fn default_parameter(self) -> f64 {
        match self {
            DetectorKind::Threshold => 0.8,
            DetectorKind::Iqr => 1.5,
            DetectorKind::Mad => 2.5,
            DetectorKind::Lr | DetectorKind::Lrr => 1.2,
            DetectorKind::Sandpiper => 0.75,
        }
    }
}

impl DetectorKind {
    /// The detector of this kind with its one parameter (a threshold, or
    /// a safety factor), the adaptive ones' `fallback` threshold (used
    /// while the history is short) and Sandpiper's `k` of `n` window.
    pub fn detector(self, parameter: f64, fallback: f64, k: usize, n: usize) -> Detector {
        let safety = parameter;
        match self {
            DetectorKind::Threshold => Detector::Threshold {
                threshold: parameter,
            },
            DetectorKind::Iqr => Detector::Iqr { safety, fallback },
            DetectorKind::Mad => Detector::Mad { safety, fallback },
            DetectorKind::Lr => Detector::Lr { safety, fallback },
            DetectorKind::Lrr => Detector::Lrr { safety, fallback },
            DetectorKind::Sandpiper => Detector::Sandpiper {
                threshold: parameter,
                k,
                n,
            },
        }
    }
}

impl std::str::FromStr for DetectorKind {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        if s.eq_ignore_ascii_case("sandpiper") {
            return Ok(DetectorKind::Sandpiper);
        }
        names::parse("detector", s, &Self::ALL, Self::name)
    }
}

impl std::fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Detector {
    /// Which detector this is, without its parameters.
    pub fn kind(&self) -> DetectorKind {
        match self {
            Detector::Threshold { .. } => DetectorKind::Threshold,
            Detector::Sandpiper { .. } => DetectorKind::Sandpiper,
            Detector::Iqr { .. } => DetectorKind::Iqr,
            Detector::Mad { .. } => DetectorKind::Mad,
            Detector::Lr { .. } => DetectorKind::Lr,
            Detector::Lrr { .. } => DetectorKind::Lrr,
        }
    }

    /// Whether the host is a hotspot.
    pub fn is_overloaded(&self, l: &HostLoad) -> bool {
        let h = l.history_newest_first;
        match *self {
            Detector::Threshold { threshold } => l.utilization > threshold,
            Detector::Sandpiper { threshold, k, n } => sandpiper(l, threshold, k, n),
            Detector::Iqr { safety, fallback } => {
                if h.len() >= ADAPTIVE_MIN_HISTORY {
                    l.utilization > 1.0 - safety * stats::iqr(h)
                } else {
                    l.utilization > fallback
                }
            }
            Detector::Mad { safety, fallback } => {
                if h.len() >= ADAPTIVE_MIN_HISTORY {
                    l.utilization > 1.0 - safety * stats::mad(h)
                } else {
                    l.utilization > fallback
                }
            }
            Detector::Lr { safety, fallback } => regression(l, safety, fallback, stats::loess),
            Detector::Lrr { safety, fallback } => {
                regression(l, safety, fallback, stats::robust_loess)
            }
        }
    }
}

impl Detector {
    /// `is_overloaded`'s verdict when a cheap computation settles it, `None`
    /// otherwise. THR is cheap already. LR's fit is plain least squares on
    /// fixed positions, so its prediction is linear in the history: a dot
    /// product with weights computed once. A prediction within rounding
    /// distance of the threshold is left to `is_overloaded`, so the verdict
    /// never differs from it.
    pub fn quick_verdict(&self, l: &HostLoad) -> Option<bool> {
        match *self {
            Detector::Threshold { threshold } => Some(l.utilization > threshold),
            Detector::Lr { safety, .. } if l.history_newest_first.len() >= LR_WINDOW => {
                let (alpha, beta) = lr_basis();
                let at = LR_WINDOW as f64 + (l.max_migration_time_s / l.interval_s).ceil();
                let (mut p, mut size) = (0.0f64, 0.0f64);
                let chrono = l.history_newest_first[..LR_WINDOW].iter().rev();
                for (j, y) in chrono.enumerate() {
                    let t = y * (alpha[j] + beta[j] * at);
                    p += t;
                    size += t.abs();
                }
                let (p, margin) = (p * safety, 1e-9 * (1.0 + size * safety));
                if !p.is_finite() || !margin.is_finite() {
                    None
                } else if p >= 1.0 + margin {
                    Some(true)
                } else if p < 1.0 - margin {
                    Some(false)
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

/// LR's fit of each unit history (one 1, the rest 0): the prediction for any
/// history is the sum of these weighted by its values.
pub(crate) fn lr_basis() -> &'static ([f64; LR_WINDOW], [f64; LR_WINDOW]) {
    static BASIS: std::sync::OnceLock<([f64; LR_WINDOW], [f64; LR_WINDOW])> =
        std::sync::OnceLock::new();
    BASIS.get_or_init(|| {
        let (mut alpha, mut beta) = ([0.0; LR_WINDOW], [0.0; LR_WINDOW]);
        for j in 0..LR_WINDOW {
            let mut e = [0.0; LR_WINDOW];
            e[j] = 1.0;
            (alpha[j], beta[j]) = stats::loess(&e);
        }
        (alpha, beta)
    })
}

fn regression(l: &HostLoad, safety: f64, fallback: f64, fit: fn(&[f64]) -> (f64, f64)) -> bool {
    let h = l.history_newest_first;
    if h.len() < LR_WINDOW {
        return l.utilization > fallback;
    }
    let mut chrono = [0.0; LR_WINDOW];
    for (c, x) in chrono.iter_mut().zip(h[..LR_WINDOW].iter().rev()) {
        *c = *x;
    }
    let (a, b) = fit(&chrono);
    let intervals = (l.max_migration_time_s / l.interval_s).ceil();
    let predicted = (a + b * (LR_WINDOW as f64 + intervals)) * safety;
    predicted >= 1.0
}

fn sandpiper(l: &HostLoad, threshold: f64, k: usize, n: usize) -> bool {
    // The current observation is the demand now; older ones come from history.
    let mut obs = vec![l.utilization];
    obs.extend(
        l.history_newest_first
            .iter()
            .skip(1)
            .take(n.saturating_sub(1)),
    );
    let over = obs.iter().filter(|u| **u > threshold).count();
    if over < k {
        return false;
    }
    forecast_ar1(&obs) > threshold
}

/// One-step AR(1) forecast from observations given newest first:
/// `mean + phi * (x_now - mean)`, with `phi` the lag-1 autocorrelation.
pub fn forecast_ar1(newest_first: &[f64]) -> f64 {
    let n = newest_first.len();
    if n == 0 {
        return 0.0;
    }
    let mean = newest_first.iter().sum::<f64>() / n as f64;
    let var: f64 = newest_first.iter().map(|x| (x - mean).powi(2)).sum();
    if n < 2 || var == 0.0 {
        return newest_first[0];
    }
    let cov: f64 = newest_first
        .windows(2)
        .map(|w| (w[0] - mean) * (w[1] - mean))
        .sum();
    let phi = (cov / var).clamp(-1.0, 1.0);
    mean + phi * (newest_first[0] - mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(u: f64, h: &[f64]) -> HostLoad<'_> {
        HostLoad {
            utilization: u,
            history_newest_first: h,
            max_migration_time_s: 14.0,
            interval_s: 300.0,
        }
    }

    #[test]
    fn threshold_is_strict() {
        let d = Detector::Threshold { threshold: 0.8 };
        assert!(!d.is_overloaded(&load(0.8, &[])));
        assert!(d.is_overloaded(&load(0.81, &[])));
    }

    #[test]
    fn iqr_and_mad_use_history_or_fallback() {
        // 12 values 0.0..0.55 step 0.05: IQR (CloudSim indices 2 and 9) = 0.35,
        // threshold = 1 - 1.5 * 0.35 = 0.475.
        let h: Vec<f64> = (0..12).map(|i| i as f64 * 0.05).rev().collect();
        let d = Detector::Iqr {
            safety: 1.5,
            fallback: 0.7,
        };
        assert!(d.is_overloaded(&load(0.48, &h)));
        assert!(!d.is_overloaded(&load(0.47, &h)));
        // Too short a history: the 0.7 fallback applies.
        assert!(!d.is_overloaded(&load(0.69, &h[..11])));
        assert!(d.is_overloaded(&load(0.71, &h[..11])));
        // MAD of 0..0.55: median 0.275, deviations median 0.15 -> 1 - 2.5*0.15 = 0.625.
        let d = Detector::Mad {
            safety: 2.5,
            fallback: 0.7,
        };
        assert!(d.is_overloaded(&load(0.63, &h)));
        assert!(!d.is_overloaded(&load(0.62, &h)));
    }

    #[test]
    fn lr_predicts_past_the_migration() {
        // History rising 0.05 per interval, newest 0.9: the line predicts
        // 0.95 one interval ahead (migration 14 s -> 1 interval).
        let h: Vec<f64> = (0..10).map(|i| 0.9 - 0.05 * i as f64).collect();
        let d = Detector::Lr {
            safety: 1.0,
            fallback: 0.7,
        };
        assert!(!d.is_overloaded(&load(0.9, &h)));
        // With safety 1.2: 0.95 * 1.2 = 1.14 >= 1.
        let d = Detector::Lr {
            safety: 1.2,
            fallback: 0.7,
        };
        assert!(d.is_overloaded(&load(0.9, &h)));
        let d = Detector::Lrr {
            safety: 1.2,
            fallback: 0.7,
        };
        assert!(d.is_overloaded(&load(0.9, &h)));
        // 9 observations only: fallback threshold on current utilization.
        assert!(!d.is_overloaded(&load(0.65, &h[..9])));
    }

    #[test]
    fn sandpiper_needs_k_of_n_and_forecast() {
        let d = Detector::Sandpiper {
            threshold: 0.75,
            k: 3,
            n: 5,
        };
        // One spike only: not a hotspot.
        assert!(!d.is_overloaded(&load(0.95, &[0.95, 0.3, 0.3, 0.3, 0.3])));
        // Sustained: 5 of 5 above, forecast above.
        assert!(d.is_overloaded(&load(0.9, &[0.9, 0.85, 0.8, 0.9, 0.85])));
        // 3 of 5 above but falling fast: forecast decides.
        let falling = [0.5, 0.8, 0.8, 0.9, 0.2];
        let f = forecast_ar1(&falling);
        assert_eq!(d.is_overloaded(&load(0.5, &falling)), f > 0.75);
    }

    /// The quick verdict, when it gives one, is the full detector's: on
    /// many pseudo-random histories, some right at LR's threshold.
    #[test]
    fn quick_verdict_agrees_with_the_detector() {
        let lr = Detector::Lr {
            safety: 1.2,
            fallback: 0.7,
        };
        let mut x: u64 = 12345;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut quick, mut total) = (0, 0);
        for i in 0..20_000 {
            let len = 8 + i % 23;
            let mut h: Vec<f64> = (0..len).map(|_| next()).collect();
            if i % 3 == 0 {
                // A flat history predicting exactly 1 / safety.
                h.iter_mut().for_each(|v| *v = 1.0 / 1.2);
            }
            let l = HostLoad {
                max_migration_time_s: 10.0 + 600.0 * next(),
                ..load(next(), &h)
            };
            for d in [&lr, &Detector::Threshold { threshold: 0.8 }] {
                total += 1;
                if let Some(v) = d.quick_verdict(&l) {
                    quick += 1;
                    assert_eq!(v, d.is_overloaded(&l), "{d:?} {h:?}");
                }
            }
        }
        assert!(quick > total / 2, "{quick} of {total}");
    }
}
