//! Scenario files (TOML): hosts, VM types, migration model, manager settings
//! and the policies to compare. The built-in default is
//! `crates/sim/scenarios/default.toml`, the setup of Beloglazov & Buyya 2012.

use std::path::{Path, PathBuf};

use cluster::{ClusterError, Config, Detector, MigrationLimits, Model, Pattern, PatternKind};
use serde::{Deserialize, Serialize};

use crate::trace::FileOrder;

/// The default scenario, compiled in.
pub const DEFAULT_SCENARIO: &str = include_str!("../scenarios/default.toml");

/// Problems with a scenario; each names the file and key.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("scenario {path}: {message}")]
    Parse { path: String, message: String },
    #[error("scenario {path}: key `{key}`: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default)]
    pub simulation: Simulation,
    #[serde(default, rename = "host_type")]
    pub host_types: Vec<HostType>,
    #[serde(default, rename = "vm_type")]
    pub vm_types: Vec<VmType>,
    #[serde(default)]
    pub migration: Migration,
    #[serde(default)]
    pub manager: ManagerSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Simulation {
    /// Trace directory; relative paths are taken from the scenario file's folder.
    pub trace_dir: Option<PathBuf>,
    /// Use only the first N day folders (all when absent).
    pub days: Option<usize>,
    /// Use exactly these day folders (overrides `days`).
    pub day_names: Option<Vec<String>>,
    /// Scheduling interval, seconds.
    pub interval_s: f64,
    /// Samples per trace file (and intervals per day).
    pub samples_per_day: usize,
    /// Seed for random selection.
    pub seed: u64,
    /// Whether VM memory limits consolidation after the initial placement.
    /// CloudSim's PlanetLab setup models VM memory use as zero once a VM runs
    /// (`UtilizationModelNull`), so the paper's consolidation ignores memory:
    /// `false` reproduces it, `true` is the physical constraint.
    pub enforce_ram: bool,
    /// Policies to run, e.g. "npa", "dvfs", "lr-mmt-1.2" (see `policy`).
    pub policies: Vec<String>,
    /// Whose semantics the run follows: `ferry` (the default) or
    /// `cloudsim` (CloudSim 3.0.3's, docs/SIMULATOR.md "Models").
    #[serde(with = "by_name")]
    pub model: Model,
    /// CPU overcommitment at the initial placement: a VM reserves its MIPS
    /// divided by this (1: its full size, as CloudSim; more packs more VMs
    /// on a host, as clouds that sell mostly idle vCPUs do).
    pub cpu_overcommit: f64,
    /// How a day's trace files are numbered: `name` (sorted, the default)
    /// or `listing` (the folder's own order, as CloudSim's examples read it).
    pub vm_order: FileOrder,
}

impl Default for Simulation {
    fn default() -> Self {
        Self {
            trace_dir: None,
            days: None,
            day_names: None,
            interval_s: 300.0,
            samples_per_day: 288,
            seed: 1,
            enforce_ram: true,
            policies: vec!["npa".into(), "dvfs".into(), "lr-mmt-1.2".into()],
            model: Model::Ferry,
            vm_order: FileOrder::Name,
            cpu_overcommit: 1.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostType {
    pub name: String,
    pub count: usize,
    pub cores: u32,
    pub mips_per_core: f64,
    pub ram_mb: f64,
    pub bandwidth_mbps: f64,
    /// Watts at 0 %, 10 %, ..., 100 % utilization (any number >= 2 of equally spaced points).
    pub power_watts: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VmType {
    pub name: String,
    pub mips: f64,
    #[serde(default = "one")]
    pub cores: u32,
    pub ram_mb: f64,
}

fn one() -> u32 {
    1
}

/// How long a migration takes and what it costs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Migration {
    /// How long a migration takes.
    pub model: MigrationModel,
    /// Share of the host bandwidth migrations get (CloudSim: half).
    pub bandwidth_share: f64,
    /// CPU lost by the migrating VM while it moves, as a share of its demand
    /// (the paper: 10 %); the destination carries the same share as overhead.
    pub degradation: f64,
    /// Pre-copy model: page-dirtying rate of every VM, MB/s, unless the engine reports one.
    pub dirty_rate_mb_s: f64,
    /// Pre-copy model: most iterative rounds before stop-and-copy.
    pub max_rounds: u32,
    /// Pre-copy model: stop iterating when less than this remains, MB.
    pub stop_copy_mb: f64,
}

impl Default for Migration {
    fn default() -> Self {
        Self {
            model: MigrationModel::MemoryOverBandwidth,
            bandwidth_share: 0.5,
            degradation: 0.1,
            dirty_rate_mb_s: 0.0,
            max_rounds: 30,
            stop_copy_mb: 50.0,
        }
    }
}

/// The migration-time models a scenario names.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationModel {
    /// Memory / bandwidth (the paper): `memory-over-bandwidth`.
    MemoryOverBandwidth,
    /// Iterative pre-copy rounds with a dirty rate: `precopy`.
    Precopy,
}

/// Settings of the decision engine that policy names do not carry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ManagerSettings {
    /// consolidate, balance or auto.
    #[serde(with = "by_name")]
    pub pattern: PatternKind,
    /// Auto pattern: consolidate below this pool load...
    pub consolidate_below: f64,
    /// ...balance at or above it when hotspots exist...
    pub balance_above: f64,
    /// ...after this many consecutive intervals.
    pub dwell: u32,
    /// Only hosts below this utilization are coldspots (absent: every host).
    pub coldspot_below: Option<f64>,
    /// Static threshold the adaptive detectors use while history is short.
    pub fallback_threshold: f64,
    /// Sandpiper: k of the last n observations.
    pub sandpiper_k: usize,
    pub sandpiper_n: usize,
    pub max_migrations_per_host: Option<u32>,
    pub max_migrations_per_cluster: Option<u32>,
    pub vm_cooldown_s: f64,
    /// A VM is not moved again before this many times its own migration
    /// time has passed (0: off).
    pub vm_cooldown_migrations: f64,
    /// Power-aware placement: increases within this many watts count as
    /// equal, lowest host index first (0: the exact rule).
    pub tie_tolerance_w: f64,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        Self {
            pattern: PatternKind::Consolidate,
            consolidate_below: 0.5,
            balance_above: 0.8,
            dwell: 3,
            coldspot_below: None,
            fallback_threshold: 0.7,
            sandpiper_k: 3,
            sandpiper_n: 5,
            max_migrations_per_host: None,
            max_migrations_per_cluster: None,
            vm_cooldown_s: 0.0,
            vm_cooldown_migrations: 0.0,
            tie_tolerance_w: 0.0,
        }
    }
}

impl ManagerSettings {
    /// The pattern with its `auto` parameters.
    pub fn pattern(&self) -> Pattern {
        self.pattern
            .pattern(self.consolidate_below, self.balance_above, self.dwell)
    }

    /// Checks every setting against the engine's ranges, whatever the
    /// policies (npa and dvfs included), so a bad value is refused before
    /// any trace is read. The detector-specific settings are checked with
    /// the detectors that use them (fallback threshold, Sandpiper's k of n).
    pub fn validate(&self) -> Result<(), ClusterError> {
        let detectors = [
            Detector::Lr {
                safety: 1.2,
                fallback: self.fallback_threshold,
            },
            Detector::Sandpiper {
                threshold: 0.75,
                k: self.sandpiper_k,
                n: self.sandpiper_n,
            },
        ];
        for detector in detectors {
            Config {
                detector,
                selector: cluster::Selector::MinMigrationTime,
                pattern: self.pattern(),
                coldspot_below: self.coldspot_below,
                limits: self.limits(),
                model: cluster::Model::Ferry,
                tie_tolerance_w: self.tie_tolerance_w,
            }
            .validate()?;
        }
        Ok(())
    }

    pub fn limits(&self) -> MigrationLimits {
        MigrationLimits {
            per_host: self.max_migrations_per_host,
            per_cluster: self.max_migrations_per_cluster,
            vm_cooldown_s: self.vm_cooldown_s,
            vm_cooldown_migrations: self.vm_cooldown_migrations,
        }
    }
}

/// A scenario and where it came from (for messages and relative paths).
#[derive(Debug, Clone)]
pub struct LoadedScenario {
    pub scenario: Scenario,
    /// File path, or `<built-in default>`.
    pub origin: String,
    /// Folder relative trace paths are resolved from.
    pub base_dir: Option<PathBuf>,
}

impl Scenario {
    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: origin.to_string(),
            message: one_line(text, &e),
        })?;
        s.validate(origin)?;
        Ok(s)
    }

    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<LoadedScenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let origin = path.display().to_string();
        let scenario = Self::parse(&text, &origin)?;
        Ok(LoadedScenario {
            scenario,
            origin,
            base_dir: path.parent().map(Path::to_path_buf),
        })
    }

    /// The built-in default scenario.
    pub fn builtin() -> LoadedScenario {
        let origin = "<built-in default>".to_string();
        let scenario = Self::parse(DEFAULT_SCENARIO, &origin).expect("built-in scenario is valid");
        LoadedScenario {
            scenario,
            origin,
            base_dir: None,
        }
    }

    /// Total number of hosts.
    /// Total number of hosts (saturating: absurd counts are refused by the
    /// memory check, not by an overflow).
    pub fn host_count(&self) -> u64 {
        self.host_types
            .iter()
            .fold(0u64, |n, h| n.saturating_add(h.count as u64))
    }

    /// Checks values a TOML parser cannot.
    pub fn validate(&self, origin: &str) -> Result<(), ScenarioError> {
        let err = |key: String, message: String| ScenarioError::Invalid {
            path: origin.to_string(),
            key,
            message,
        };
        let sim = &self.simulation;
        if !(sim.interval_s > 0.0) {
            return Err(err(
                "simulation.interval_s".into(),
                "must be positive".into(),
            ));
        }
        if sim.samples_per_day == 0 {
            return Err(err(
                "simulation.samples_per_day".into(),
                "must be at least 1".into(),
            ));
        }
        if !(sim.cpu_overcommit >= 1.0 && sim.cpu_overcommit.is_finite()) {
            return Err(err(
                "simulation.cpu_overcommit".into(),
                "must be a number >= 1".into(),
            ));
        }
        if sim.days == Some(0) {
            return Err(err("simulation.days".into(), "must be at least 1".into()));
        }
        if self.host_types.is_empty() || self.host_count() == 0 {
            return Err(err(
                "host_type".into(),
                "the scenario has zero hosts".into(),
            ));
        }
        for (i, h) in self.host_types.iter().enumerate() {
            let k = |f: &str| format!("host_type[{i}].{f} ({})", h.name);
            if h.cores == 0 {
                return Err(err(k("cores"), "must be at least 1".into()));
            }
            if !(h.mips_per_core > 0.0) {
                return Err(err(k("mips_per_core"), "must be positive".into()));
            }
            if !(h.ram_mb > 0.0) {
                return Err(err(k("ram_mb"), "must be positive".into()));
            }
            if !(h.bandwidth_mbps > 0.0) {
                return Err(err(k("bandwidth_mbps"), "must be positive".into()));
            }
            cluster::PowerModel::new(h.power_watts.clone())
                .map_err(|e| err(k("power_watts"), e.to_string()))?;
        }
        if self.vm_types.is_empty() {
            return Err(err(
                "vm_type".into(),
                "at least one VM type is needed".into(),
            ));
        }
        for (i, v) in self.vm_types.iter().enumerate() {
            let k = |f: &str| format!("vm_type[{i}].{f} ({})", v.name);
            if !(v.mips > 0.0) {
                return Err(err(k("mips"), "must be positive".into()));
            }
            if v.cores == 0 {
                return Err(err(k("cores"), "must be at least 1".into()));
            }
            if !(v.ram_mb > 0.0) {
                return Err(err(k("ram_mb"), "must be positive".into()));
            }
            let fits = self.host_types.iter().any(|h| {
                h.count > 0
                    && v.mips <= h.mips_per_core * v.cores.min(h.cores) as f64 + 1e-9
                    && v.cores <= h.cores
                    && v.ram_mb <= h.ram_mb
            });
            if !fits {
                return Err(err(
                    format!("vm_type[{i}] ({})", v.name),
                    format!(
                        "a VM of {} MIPS x {} cores and {} MB is larger than every host type",
                        v.mips, v.cores, v.ram_mb
                    ),
                ));
            }
        }
        let m = &self.migration;
        if !(m.bandwidth_share > 0.0 && m.bandwidth_share <= 1.0) {
            return Err(err(
                "migration.bandwidth_share".into(),
                "must be in (0, 1]".into(),
            ));
        }
        if !(0.0..1.0).contains(&m.degradation) {
            return Err(err(
                "migration.degradation".into(),
                "must be in [0, 1)".into(),
            ));
        }
        if !(m.dirty_rate_mb_s >= 0.0 && m.stop_copy_mb >= 0.0) {
            return Err(err(
                "migration.dirty_rate_mb_s".into(),
                "must be >= 0".into(),
            ));
        }
        self.manager
            .validate()
            .map_err(|e| err("manager".into(), e.to_string()))?;
        for (i, p) in sim.policies.iter().enumerate() {
            p.parse::<crate::policy::Policy>()
                .map_err(|e| err(format!("simulation.policies[{i}]"), e.to_string()))?;
        }
        Ok(())
    }
}

/// A TOML error on one line: "line L, column C (`the line`): message".
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let Some(before) = e.span().and_then(|span| text.get(..span.start)) else {
        return e.message().trim_end().to_string();
    };
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    let source = text[line_start..].lines().next().unwrap_or("").trim();
    format!(
        "line {line}, column {column} (`{source}`): {}",
        e.message().trim_end()
    )
}

/// Serde for values named by `FromStr` and `Display` (cluster's names), so
/// a scenario spells them as everywhere else.
mod by_name {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loaded scenario shipped beside the default one is valid.
    #[test]
    fn loaded_scenario_is_valid() {
        let s = Scenario::parse(include_str!("../scenarios/loaded.toml"), "loaded.toml").unwrap();
        assert_eq!(s.host_count(), 64);
        assert_eq!(s.manager.pattern, PatternKind::Auto);
        assert_eq!(s.simulation.cpu_overcommit, 8.0);
    }

    /// Names written back to TOML read the same (pattern, migration model).
    #[test]
    fn scenario_round_trips_through_toml() {
        let mut s = Scenario::builtin().scenario;
        s.manager.pattern = PatternKind::Auto;
        s.migration.model = MigrationModel::Precopy;
        let text = toml::to_string(&s).unwrap();
        assert!(text.contains("pattern = \"auto\""), "{text}");
        assert!(text.contains("model = \"precopy\""), "{text}");
        assert_eq!(Scenario::parse(&text, "round trip").unwrap(), s);
    }
}
