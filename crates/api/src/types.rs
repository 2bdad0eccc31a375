//! Request and response bodies of the control API (JSON).

use serde::{Deserialize, Serialize};

/// Values of [`VmStatus::state`].
pub mod vm_state {
    /// Booting or restoring; not yet running guest code.
    pub const STARTING: &str = "starting";
    pub const RUNNING: &str = "running";
    pub const PAUSED: &str = "paused";
    /// A migration to another host is in progress; the VM still runs here.
    pub const MIGRATING: &str = "migrating";
    /// The VM now runs on another host and will never run here again.
    pub const MIGRATED: &str = "migrated";
    /// The guest ended (exit port, shutdown, crash); see `exit_status`/`error`.
    pub const EXITED: &str = "exited";
}

/// `GET /api/v1/vm`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VmStatus {
    /// One of [`vm_state`].
    pub state: String,
    pub memory_bytes: u64,
    pub vcpus: u32,
    /// Guest program name or kernel path.
    pub kernel: String,
    pub cmdline: String,
    /// The guest's latest published counters, once it has published any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestCounters>,
    /// Exit status once the VM has exited through the exit port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// Why the VM stopped, when it stopped on an error (e.g. triple fault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Counters a guest program publishes (status page). Fields a workload does
/// not have stay 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestCounters {
    /// `dirtier`, `idle` or `kvstore`.
    pub workload: String,
    pub heartbeat_seq: u64,
    /// dirtier: page writes so far, and the achieved rate in pages/s.
    pub pages_written: u64,
    pub write_rate: u64,
    /// Self-verification rounds that passed and that found wrong contents.
    pub verify_passes: u64,
    pub verify_failures: u64,
    /// kvstore: operations so far, rate, and latency percentiles.
    pub ops_total: u64,
    pub ops_per_sec: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
}

/// `PUT /api/v1/vm.snapshot`: write a snapshot of the paused VM to `path`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    pub path: String,
}

/// Answer to a snapshot request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotResponse {
    /// Size of the snapshot file.
    pub bytes: u64,
    /// Pages stored as data, and zero pages left out.
    pub pages: u64,
    pub zero_pages: u64,
    pub duration_ms: u64,
}

/// `PUT /api/v1/vm.migrate`: start a live migration to `to` (host:port).
///
/// Quantities are plain numbers whose field names carry the unit
/// (`_bps` bits per second, `_ms` milliseconds), docs/UNITS.md.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    pub to: String,
    /// `stop-and-copy`, `xen` or `downtime` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Cap while the guest runs, bits/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bandwidth_bps: Option<u64>,
    /// Emulated link capacity, bits/s: caps every round, the paused switchover too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_bandwidth_bps: Option<u64>,
    /// Downtime target, ms; fractions allowed (0.5 = 500 us).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_downtime_ms: Option<f64>,
    /// Pre-copy rounds at most (1-1000); replaces the strategy's own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rounds: Option<u32>,
    /// Pre-copy time at most, ms from the start; replaces the strategy's own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// When a limit is reached: `force` (switch over, the default) or
    /// `abort` (roll back; the VM stays here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<String>,
    /// File holding the migration secret shared with the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
}

/// Body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
