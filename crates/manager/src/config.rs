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
    /// How orders migrate.
    pub migration: OrderMigration,
    /// The view's settings that reports do not carry.
    pub view: ViewSettings,
}

/// The detector of `kind` with its one parameter (a threshold or a safety
/// factor), the adaptive ones' fallback threshold and Sandpiper's window
/// as the simulator's defaults.
pub fn detector(kind: cluster::DetectorKind, parameter: f64) -> cluster::Detector {
    use cluster::{Detector, DetectorKind};
    let (s, fallback) = (parameter, 0.7);
    match kind {
        DetectorKind::Threshold => Detector::Threshold { threshold: s },
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
        DetectorKind::Sandpiper => Detector::Sandpiper {
            threshold: s,
            k: 3,
            n: 5,
        },
    }
}
