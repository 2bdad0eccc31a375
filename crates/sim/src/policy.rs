//! Policy names: `npa`, `dvfs`, or `<detector>-<selector>[-<parameter>]` as
//! in Beloglazov & Buyya (e.g. `lr-mmt-1.2`, `thr-mmt-0.8`, `sp-vsr-0.75`).

use cluster::{Detector, Selector};

/// An unknown or malformed policy name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "unknown policy {name:?}: {why}; known: npa, dvfs, or DETECTOR-SELECTOR[-PARAM] with DETECTOR one of thr, iqr, mad, lr, lrr, sp and SELECTOR one of mmt, rs, mc, mu, vsr (e.g. lr-mmt-1.2)"
)]
pub struct PolicyError {
    pub name: String,
    pub why: String,
}

/// What runs the data center.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// No power management: every host on at full power.
    Npa,
    /// DVFS only: power follows utilization, no migrations, empty hosts off.
    Dvfs,
    /// The decision engine with a detector (its kind and parameter) and selector.
    Managed {
        detector: DetectorKind,
        parameter: f64,
        selector: Selector,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorKind {
    Thr,
    Iqr,
    Mad,
    Lr,
    Lrr,
    Sandpiper,
}

impl DetectorKind {
    fn default_parameter(self) -> f64 {
        match self {
            DetectorKind::Thr => 0.8,
            DetectorKind::Iqr => 1.5,
            DetectorKind::Mad => 2.5,
            DetectorKind::Lr | DetectorKind::Lrr => 1.2,
            DetectorKind::Sandpiper => 0.75,
        }
    }

    fn name(self) -> &'static str {
        match self {
            DetectorKind::Thr => "thr",
            DetectorKind::Iqr => "iqr",
            DetectorKind::Mad => "mad",
            DetectorKind::Lr => "lr",
            DetectorKind::Lrr => "lrr",
            DetectorKind::Sandpiper => "sp",
        }
    }
}

impl Policy {
    /// Parses a policy name (case-insensitive).
    pub fn parse(name: &str) -> Result<Self, PolicyError> {
        let fail = |why: &str| PolicyError {
            name: name.to_string(),
            why: why.to_string(),
        };
        let lower = name.trim().to_ascii_lowercase();
        match lower.as_str() {
            "npa" => return Ok(Policy::Npa),
            "dvfs" => return Ok(Policy::Dvfs),
            _ => {}
        }
        let parts: Vec<&str> = lower.split('-').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(fail(
                "expected DETECTOR-SELECTOR or DETECTOR-SELECTOR-PARAM",
            ));
        }
        let detector = match parts[0] {
            "thr" => DetectorKind::Thr,
            "iqr" => DetectorKind::Iqr,
            "mad" => DetectorKind::Mad,
            "lr" => DetectorKind::Lr,
            "lrr" => DetectorKind::Lrr,
            "sp" | "sandpiper" => DetectorKind::Sandpiper,
            _ => return Err(fail(&format!("unknown detector {:?}", parts[0]))),
        };
        let selector = match parts[1] {
            "mmt" => Selector::MinMigrationTime,
            "rs" => Selector::Random,
            "mc" => Selector::MaxCorrelation,
            "mu" => Selector::MinUtilization,
            "vsr" => Selector::VolumeToSize,
            _ => return Err(fail(&format!("unknown selector {:?}", parts[1]))),
        };
        let parameter = match parts.get(2) {
            None => detector.default_parameter(),
            Some(p) => p
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| fail(&format!("parameter {p:?} is not a non-negative number")))?,
        };
        if matches!(detector, DetectorKind::Thr | DetectorKind::Sandpiper) && parameter <= 0.0 {
            return Err(fail("a threshold must be positive"));
        }
        Ok(Policy::Managed {
            detector,
            parameter,
            selector,
        })
    }

    /// Canonical name, e.g. `lr-mmt-1.2`.
    pub fn name(&self) -> String {
        match self {
            Policy::Npa => "npa".into(),
            Policy::Dvfs => "dvfs".into(),
            Policy::Managed {
                detector,
                parameter,
                selector,
            } => {
                // `{:?}` keeps the decimal point: thr-mmt-1.0, not thr-mmt-1.
                format!("{}-{}-{:?}", detector.name(), selector.name(), parameter)
            }
        }
    }

    /// The engine's detector for a managed policy.
    pub fn detector(&self, fallback: f64, k: usize, n: usize) -> Option<Detector> {
        let Policy::Managed {
            detector,
            parameter,
            ..
        } = *self
        else {
            return None;
        };
        let s = parameter;
        Some(match detector {
            DetectorKind::Thr => Detector::Threshold { threshold: s },
            DetectorKind::Iqr => Detector::Iqr {
                safety: s,
                fallback,
            },
            DetectorKind::Mad => Detector::Mad {
                safety: s,
                fallback,
            },
            DetectorKind::Lr => Detector::Lr {
                safety: s,
                fallback,
            },
            DetectorKind::Lrr => Detector::Lrr {
                safety: s,
                fallback,
            },
            DetectorKind::Sandpiper => Detector::Sandpiper { threshold: s, k, n },
        })
    }
}

/// The policies of Beloglazov & Buyya's comparison table plus Sandpiper.
pub const PAPER_POLICIES: &[&str] = &[
    "npa",
    "dvfs",
    "thr-mmt-1.0",
    "thr-mmt-0.8",
    "iqr-mmt-1.5",
    "mad-mmt-2.5",
    "lrr-mmt-1.2",
    "lr-mmt-1.2",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in [
            "npa",
            "dvfs",
            "lr-mmt-1.2",
            "thr-rs-0.8",
            "iqr-mc-1.5",
            "mad-mu-2.5",
            "sp-vsr-0.75",
        ] {
            assert_eq!(Policy::parse(n).unwrap().name(), n);
        }
        assert_eq!(Policy::parse("LRR-MMT").unwrap().name(), "lrr-mmt-1.2");
    }

    #[test]
    fn unknown_names_are_explained() {
        let e = Policy::parse("foo-mmt").unwrap_err().to_string();
        assert!(e.contains("unknown detector \"foo\""), "{e}");
        let e = Policy::parse("lr-xyz").unwrap_err().to_string();
        assert!(e.contains("unknown selector \"xyz\""), "{e}");
        assert!(Policy::parse("lr-mmt-abc").is_err());
        assert!(Policy::parse("thr-mmt-0").is_err());
        assert!(Policy::parse("lr").is_err());
    }
}
