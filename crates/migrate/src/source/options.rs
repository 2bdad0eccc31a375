//! How to migrate, and what a failed migration returns.

use std::sync::Arc;
use std::time::Duration;

use wire::{Offer, Secret};

use crate::convergence::{Limits, OnTimeout};
use crate::error::MigrateError;
use crate::events::Observer;
use crate::progress::{CancelToken, PostcopySwitch, Progress};
use crate::report::MigrationReport;
use crate::strategy::Strategy;
use units::Bandwidth;

/// Default time allowed for the TCP connection to be established.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time without progress after which a migration is aborted.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default downtime target given to strategies.
pub const DEFAULT_MAX_DOWNTIME: Duration = Duration::from_millis(300);

/// How to migrate.
pub struct SourceOptions {
    pub secret: Secret,
    pub strategy: Box<dyn Strategy>,
    /// Cap on the bandwidth used while the guest runs (`None` = unlimited),
    /// QEMU's `max-bandwidth`: the paused switchover uses the whole link.
    pub max_bandwidth: Option<Bandwidth>,
    /// Capacity of an emulated link (`None` = the real one): caps every
    /// round, the paused switchover included, to reproduce slow links on
    /// loopback.
    pub link_bandwidth: Option<Bandwidth>,
    /// Downtime target, given to the strategy; a completed migration whose
    /// downtime exceeds it says so (`downtime_target_missed`).
    pub max_downtime: Duration,
    /// The operator's bounds on pre-copy; each replaces the strategy's own
    /// ([`Strategy::limits`](crate::Strategy::limits)) where given.
    pub limits: Limits,
    /// What to do when pre-copy reaches the limit in force.
    pub on_timeout: OnTimeout,
    pub connect_timeout: Duration,
    /// Abort when the destination makes no progress for this long.
    pub stall_timeout: Duration,
    /// Live progress, for another thread to poll.
    pub progress: Arc<Progress>,
    /// Set from another thread to cancel (honoured until Commit is sent).
    pub cancel: CancelToken,
    /// Set from another thread to switch a running pre-copy to post-copy.
    pub postcopy_switch: PostcopySwitch,
    /// Protocol versions and capabilities offered.
    pub offer: Offer,
    /// Identity of this migration, sent to the destination in Start
    /// (random by default): the one name both sides log it under.
    pub migration_id: u64,
    /// Told of each phase, round and the end, on the migration's thread.
    pub observer: Option<Observer>,
    /// In post-copy, the destination runs the VM only while it holds a
    /// lease this long that the source renews (`--lease`; zero: none).
    pub lease: Duration,
    /// In post-copy, how long a broken link may take to come back
    /// (`--recovery-timeout`; zero: give up at once).
    pub recovery_timeout: Duration,
    /// In post-copy with a lease, how often the destination sends a
    /// transaction back (`--sync-interval`; zero: never, and the VM cannot
    /// resume here if the destination is lost).
    pub sync_interval: Duration,
    /// Mutual TLS on every connection to the destination (`--tls-dir`);
    /// `None`: plain TCP, authenticated by the secret alone.
    pub tls: Option<tls::Credentials>,
    /// Where to keep what a restarted source process needs to go on with
    /// a post-copy (`None`: a post-copy dies with this process).
    pub journal: Option<Box<dyn super::Journal>>,
}

impl SourceOptions {
    /// Options with the defaults above, unlimited bandwidth, and fresh progress/cancel handles.
    pub fn new(secret: Secret, strategy: Box<dyn Strategy>) -> Self {
        SourceOptions {
            secret,
            strategy,
            max_bandwidth: None,
            link_bandwidth: None,
            max_downtime: DEFAULT_MAX_DOWNTIME,
            limits: Limits::default(),
            on_timeout: OnTimeout::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            progress: Progress::new(),
            cancel: CancelToken::new(),
            postcopy_switch: PostcopySwitch::new(),
            offer: Offer::default(),
            migration_id: u64::from_le_bytes(wire::nonce()[..8].try_into().expect("8 bytes")),
            observer: None,
            lease: super::DEFAULT_LEASE,
            recovery_timeout: crate::dest::DEFAULT_RECOVERY_TIMEOUT,
            sync_interval: super::DEFAULT_SYNC_INTERVAL,
            tls: None,
            journal: None,
        }
    }
}

/// A migration that did not complete; `report.vm_location` says where the VM runs.
#[derive(Debug)]
pub struct MigrationFailure {
    pub error: MigrateError,
    pub report: MigrationReport,
}

impl std::fmt::Display for MigrationFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "migration failed: {}", self.error)
    }
}

impl std::error::Error for MigrationFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
