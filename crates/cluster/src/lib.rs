//! Ferry's migration decision engine.
//!
//! Each scheduling interval the caller (the trace-driven simulator in `sim`,
//! later the live manager) builds a [`PoolView`] of the hosts and VMs and calls
//! [`Manager::decide`]. The engine finds hotspots with a [`Detector`], picks the
//! mode (balance or consolidate, see [`Pattern`]), selects VMs to move with a
//! [`Selector`], places them ([`Placement`]: power-aware best fit decreasing,
//! or least loaded when balancing), empties coldspots when consolidating, and
//! respects the [`MigrationLimits`]. The result is a [`Plan`]: [`Move`]s (vm,
//! from, to, reason) and hosts to switch off and on. Nothing here knows about
//! KVM or about the simulator. The policies follow Beloglazov & Buyya, CCPE
//! 2012, as implemented in CloudSim's `PowerVmAllocationPolicyMigration*`
//! classes, plus Sandpiper's detector and VSR selector; docs/MANAGER.md
//! describes the rules.
//!
//! Layout: `manager` (state across intervals) drives `planner` (one plan),
//! which moves VMs on a tentative `allocation`, chooses hosts in `place`, and
//! counts migrations in `limits`; `pattern` decides the mode; `config`,
//! `detect`, `select` and `model` are the inputs; `names` is how the parts
//! are named in policies and scenarios.

// `!(x > 0.0)` is used on purpose: it also rejects NaN. Index loops over
// parallel per-host/per-VM arrays read better than zipped iterators here.
#![allow(clippy::neg_cmp_op_on_partial_ord, clippy::needless_range_loop)]

mod allocation;
mod buckets;
mod config;
pub mod detect;
mod index;
mod limits;
mod lr_line;
mod manager;
pub mod model;
mod names;
mod pattern;
mod place;
mod planner;
pub mod select;
pub mod stats;

pub use config::{Config, Model};
pub use detect::{Detector, DetectorKind, HostLoad};
pub use limits::MigrationLimits;
pub use manager::Manager;
pub use model::{HISTORY_LEN, HostInfo, PoolView, PowerModel, VmInfo};
pub use names::UnknownName;
pub use pattern::{Mode, Pattern, PatternKind, TREND_WINDOW, pool_load};
pub use place::Placement;
pub use planner::{Move, Plan, Reason};
pub use select::Selector;

/// Errors of the decision engine.
// Each variant names the input that is invalid.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    /// The pool view is inconsistent (an index out of range, a negative size...).
    #[error("invalid pool view: {0}")]
    InvalidPoolView(String),
    /// A configuration value is out of range.
    #[error("invalid manager configuration: {0}")]
    InvalidConfig(String),
    /// A power model cannot be built from the given points.
    #[error("invalid power model: {0}")]
    InvalidPowerModel(String),
}
