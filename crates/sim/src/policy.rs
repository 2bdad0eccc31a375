//! Policy names: `npa`, `dvfs`, or `<detector>-<selector>[-<parameter>]` as
//! in Beloglazov & Buyya (e.g. `lr-mmt-1.2`, `thr-mmt-0.8`, `sp-vsr-0.75`).

use std::str::FromStr;

use cluster::{Config, Detector, DetectorKind, Model, Selector, UnknownName};

use crate::scenario::ManagerSettings;

/// An unknown or malformed policy name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "unknown policy {name:?}: expected npa, dvfs, cost-aware or DETECTOR-SELECTOR[-PARAM] (e.g. lr-mmt-1.2)"
    )]
    Shape { name: String },
    /// The detector or selector part is unknown.
    #[error("unknown policy {name:?}: {part}")]
    UnknownPart { name: String, part: UnknownName },
    #[error("policy {name:?}: parameter {parameter:?} is not a non-negative number")]
    Parameter { name: String, parameter: String },
    #[error("policy {name:?}: a threshold must be positive")]
    Threshold { name: String },
}

/// What runs the data center.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// No power management: every host on at full power.
    Npa,
    /// DVFS only: power follows utilization, no migrations, empty hosts off.
    Dvfs,
    /// Ferry's cost-aware consolidation (docs/MANAGER.md, "A policy of our
    /// own"): LR-MMT-1.2 that empties only hosts below 40 % load and moves a
    /// VM again only after 100 times its own migration time.
    CostAware,
    /// The decision engine with a detector (its kind and parameter) and selector.
    Managed {
        detector: DetectorKind,
        parameter: f64,
        selector: Selector,
    },
}

impl FromStr for Policy {
    type Err = PolicyError;

    /// Parses a policy name (ASCII case does not matter).
    fn from_str(name: &str) -> Result<Self, PolicyError> {
        let lower = name.trim().to_ascii_lowercase();
        match lower.as_str() {
            "npa" => return Ok(Policy::Npa),
            "dvfs" => return Ok(Policy::Dvfs),
            COST_AWARE => return Ok(Policy::CostAware),
            _ => {}
        }
        let name = || name.to_string();
        let parts: Vec<&str> = lower.split('-').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(PolicyError::Shape { name: name() });
        }
        let part = |part| PolicyError::UnknownPart { name: name(), part };
        let detector: DetectorKind = parts[0].parse().map_err(part)?;
        let selector: Selector = parts[1].parse().map_err(part)?;
        let parameter = match parts.get(2) {
            None => detector.default_parameter(),
            Some(p) => p
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| PolicyError::Parameter {
                    name: name(),
                    parameter: p.to_string(),
                })?,
        };
        if matches!(detector, DetectorKind::Threshold | DetectorKind::Sandpiper) && parameter <= 0.0
        {
            return Err(PolicyError::Threshold { name: name() });
        }
        Ok(Policy::Managed {
            detector,
            parameter,
            selector,
        })
    }
}

/// The canonical name, e.g. `lr-mmt-1.2`.
impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::Npa => f.write_str("npa"),
            Policy::Dvfs => f.write_str("dvfs"),
            Policy::CostAware => f.write_str(COST_AWARE),
            // `{:?}` keeps the decimal point: thr-mmt-1.0, not thr-mmt-1.
            Policy::Managed {
                detector,
                parameter,
                selector,
            } => write!(f, "{detector}-{selector}-{parameter:?}"),
        }
    }
}

impl Policy {
    /// The engine's configuration for a managed policy (`None` for npa and
    /// dvfs), with the scenario's manager settings and model.
    pub fn config(&self, m: &ManagerSettings, model: Model) -> Option<Config> {
        if *self == Policy::CostAware {
            let mut limits = m.limits();
            limits.vm_cooldown_migrations = limits.vm_cooldown_migrations.max(COOLDOWN_MIGRATIONS);
            return Some(Config {
                detector: Detector::Lr {
                    safety: 1.2,
                    fallback: m.fallback_threshold,
                },
                selector: Selector::MinMigrationTime,
                pattern: m.pattern(),
                coldspot_below: Some(m.coldspot_below.unwrap_or(COLDSPOT_BELOW)),
                limits,
                model,
                tie_tolerance_w: m.tie_tolerance_w,
            });
        }
        let Policy::Managed { selector, .. } = *self else {
            return None;
        };
        Some(Config {
            detector: self.detector(m.fallback_threshold, m.sandpiper_k, m.sandpiper_n)?,
            selector,
            pattern: m.pattern(),
            coldspot_below: m.coldspot_below,
            limits: m.limits(),
            model,
            tie_tolerance_w: m.tie_tolerance_w,
        })
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
        Some(detector.detector(parameter, fallback, k, n))
    }
}

/// The name of Ferry's cost-aware policy.
pub const COST_AWARE: &str = "cost-aware";
/// Cost-aware: only hosts below this load are emptied (unless the scenario
/// sets `coldspot_below`)...
const COLDSPOT_BELOW: f64 = 0.4;
/// ...and a VM moves again only after this many times its migration time.
const COOLDOWN_MIGRATIONS: f64 = 100.0;

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
            "cost-aware",
        ] {
            assert_eq!(n.parse::<Policy>().unwrap().to_string(), n);
        }
        let p: Policy = "LRR-MMT".parse().unwrap();
        assert_eq!(p.to_string(), "lrr-mmt-1.2");
        let p: Policy = "sandpiper-vsr".parse().unwrap();
        assert_eq!(p.to_string(), "sp-vsr-0.75");
    }

    #[test]
    fn unknown_names_are_explained() {
        let e = "foo-mmt".parse::<Policy>().unwrap_err().to_string();
        assert!(e.contains("unknown detector \"foo\""), "{e}");
        assert!(e.contains("known: thr, iqr, mad, lr, lrr, sp"), "{e}");
        let e = "lr-xyz".parse::<Policy>().unwrap_err().to_string();
        assert!(e.contains("unknown selector \"xyz\""), "{e}");
        assert!("lr-mmt-abc".parse::<Policy>().is_err());
        assert!("thr-mmt-0".parse::<Policy>().is_err());
        let e = "lr".parse::<Policy>().unwrap_err().to_string();
        assert!(e.contains("DETECTOR-SELECTOR"), "{e}");
    }
}
