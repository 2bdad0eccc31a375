//! Ferry's migration decision engine.
//!
//! Each scheduling interval the caller (the trace-driven simulator in `sim`,
//! later the live manager) builds a [`PoolView`] of the hosts and VMs and calls
//! [`Manager::decide`]. The engine finds hotspots with a [`Detector`], picks the
//! mode (balance or consolidate, see [`Pattern`]), selects VMs to move with a
//! [`Selector`], places them (power-aware best fit decreasing, or least loaded
//! when balancing), empties coldspots when consolidating, and respects the
//! [`MigrationLimits`]. The result is a [`Plan`]: migrations (vm, from, to, reason) and
//! hosts to switch off and on. Nothing here knows about KVM or about the
//! simulator. The policies follow Beloglazov & Buyya, CCPE 2012, as implemented
//! in CloudSim's `PowerVmAllocationPolicyMigration*` classes, plus Sandpiper's
//! detector and VSR selector; docs/MANAGER.md describes the rules.

// `!(x > 0.0)` is used on purpose: it also rejects NaN. Index loops over
// parallel per-host/per-VM arrays read better than zipped iterators here.
#![allow(clippy::neg_cmp_op_on_partial_ord, clippy::needless_range_loop)]

pub mod detect;
pub mod manager;
pub mod model;
pub mod select;
pub mod stats;

pub use detect::{Detector, HostLoad};
pub use manager::{Config, Manager, MigrationLimits, Mode, Move, Pattern, Placement, Plan, Reason};
pub use model::{HostInfo, PoolView, PowerModel, VmInfo};
pub use select::Selector;

/// Errors of the decision engine.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    /// The snapshot is inconsistent (an index out of range, a negative size...).
    #[error("invalid snapshot: {0}")]
    PoolView(String),
    /// A configuration value is out of range.
    #[error("invalid manager configuration: {0}")]
    Config(String),
    /// A power model cannot be built from the given points.
    #[error("invalid power model: {0}")]
    PowerModel(String),
}
