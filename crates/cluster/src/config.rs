//! What configures a `Manager`, and the ranges its values must respect.

use crate::ClusterError;
use crate::detect::Detector;
use crate::limits::MigrationLimits;
use crate::names::{self, UnknownName};
use crate::pattern::Pattern;
use crate::select::Selector;

/// Whose rules the engine follows where Ferry and CloudSim 3.0.3 differ
/// (docs/MANAGER.md, "Models"). The simulator's accounting follows the same
/// choice (docs/SIMULATOR.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Model {
    /// Ferry's rules: a placement is charged the power it really adds (all
    /// of an empty host's), and a host that receives a VM in a plan is not
    /// emptied in the same plan.
    #[default]
    Ferry,
    /// CloudSim 3.0.3's `PowerVmAllocationPolicyMigrationAbstract` as it is:
    /// a candidate host is charged its planned power minus its power before
    /// this plan (an empty host: minus its idle power); coldspots are chosen
    /// by their load before this plan, among hosts that were on, and may be
    /// hosts that just received a VM (which then moves twice).
    CloudSim,
}

impl Model {
    /// Every model, in the order names are listed.
    pub const ALL: [Model; 2] = [Model::Ferry, Model::CloudSim];

    /// Name as written in scenarios and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Model::Ferry => "ferry",
            Model::CloudSim => "cloudsim",
        }
    }
}

impl std::str::FromStr for Model {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        names::parse("model", s, &Self::ALL, Self::name)
    }
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that configures a `Manager`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub detector: Detector,
    pub selector: Selector,
    pub pattern: Pattern,
    /// In consolidate mode, only hosts below this utilization are coldspots;
    /// `None` tries every host, least loaded first (Beloglazov & Buyya).
    pub coldspot_below: Option<f64>,
    pub limits: MigrationLimits,
    /// Ferry's rules or CloudSim's, where they differ.
    pub model: Model,
    /// Power-aware placement: increases within this many watts of the least
    /// count as equal, and the lowest host index among them wins. 0 is the
    /// exact rule; above 0 the Ferry model places through an index of hosts
    /// by kind and load instead of evaluating every host (docs/MANAGER.md,
    /// "Placement").
    pub tie_tolerance_w: f64,
}

impl Config {
    /// Checks parameter ranges.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let bad = |m: String| Err(ClusterError::InvalidConfig(m));
        match self.detector {
            Detector::Threshold { threshold } | Detector::Sandpiper { threshold, .. }
                if !(threshold > 0.0 && threshold.is_finite()) =>
            {
                return bad(format!("threshold {threshold} must be a positive number"));
            }
            Detector::Sandpiper { k, n, .. } if k == 0 || n == 0 || k > n => {
                return bad(format!("sandpiper needs 1 <= k <= n, got k={k} n={n}"));
            }
            Detector::Iqr { safety, fallback }
            | Detector::Mad { safety, fallback }
            | Detector::Lr { safety, fallback }
            | Detector::Lrr { safety, fallback }
                if !(safety >= 0.0
                    && safety.is_finite()
                    && fallback > 0.0
                    && fallback.is_finite()) =>
            {
                return bad(format!(
                    "safety parameter {safety} must be >= 0 and fallback threshold {fallback} > 0"
                ));
            }
            _ => {}
        }
        if let Pattern::Auto {
            consolidate_below,
            balance_above,
            ..
        } = self.pattern
        {
            if !(consolidate_below >= 0.0 && balance_above.is_finite()) {
                return bad(format!(
                    "consolidate_below ({consolidate_below}) and balance_above ({balance_above}) must be loads >= 0"
                ));
            }
            if !(consolidate_below < balance_above) {
                return bad(format!(
                    "consolidate_below ({consolidate_below}) must be below balance_above ({balance_above})"
                ));
            }
        }
        if let Some(c) = self.coldspot_below
            && !(0.0..=1.0).contains(&c)
        {
            return bad(format!(
                "coldspot_below ({c}) must be a utilization in [0, 1]"
            ));
        }
        if !(self.tie_tolerance_w >= 0.0 && self.tie_tolerance_w.is_finite()) {
            return bad(format!(
                "tie_tolerance_w ({}) must be a number of watts >= 0",
                self.tie_tolerance_w
            ));
        }
        if !(self.limits.vm_cooldown_s >= 0.0) {
            return bad("vm_cooldown_s must be >= 0".into());
        }
        if !(self.limits.vm_cooldown_migrations >= 0.0
            && self.limits.vm_cooldown_migrations.is_finite())
        {
            return bad("vm_cooldown_migrations must be >= 0".into());
        }
        if self.limits.per_host == Some(0) || self.limits.per_cluster == Some(0) {
            return bad("migration limits must be at least 1 (omit them for no limit)".into());
        }
        Ok(())
    }
}
