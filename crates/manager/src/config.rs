//! What a manager is told (the binary fills it from flags).

use std::path::PathBuf;
use std::time::Duration;

use agent::OrderMigration;

use crate::view::ViewSettings;

/// A manager's configuration.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// This manager's name in the election and the logs.
    pub name: String,
    pub store: store::StoreConfig,
    /// How often the pool is looked at and decided on.
    pub interval: Duration,
    /// TTL of the leadership lease: a standby takes over at most this long
    /// after the leader died.
    pub lease_ttl: Duration,
    /// The decision engine's policy, the simulator's (docs/MANAGER.md).
    pub policy: cluster::Config,
    /// Seed of the engine's random choices.
    pub seed: u64,
    /// Where decisions are appended as JSON lines, besides the log.
    pub decision_log: Option<PathBuf>,
    /// Ended orders (completed, failed, abandoned) are removed this long
    /// after they were issued; never shorter than the policy's cooldown,
    /// which is read from them.
    pub order_retention: Duration,
    /// How orders migrate.
    pub migration: OrderMigration,
    /// The view's settings that reports do not carry.
    pub view: ViewSettings,
}

/// The adaptive detectors' threshold while a host's history is short,
/// and Sandpiper's `k` of `n` window: the simulator's defaults.
pub const FALLBACK_THRESHOLD: f64 = 0.7;
pub const SANDPIPER_WINDOW: (usize, usize) = (3, 5);
