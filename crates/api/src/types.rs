//! Request and response bodies of the control API (JSON).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Values of [`VmStatus::state`].
pub mod vm_state {
    /// Booting or restoring: the API answers, no guest code runs yet.
    pub const BOOTING: &str = "booting";
    /// Waiting for (or receiving) an incoming live migration; nothing runs yet.
    pub const INCOMING: &str = "incoming";
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
    /// The VM's identity (`--name`, or generated), the `vm` of its events.
    #[serde(default)]
    pub id: String,
    /// One of [`vm_state`].
    pub state: String,
    pub memory_bytes: u64,
    pub vcpus: u32,
    /// Guest program name or kernel path.
    pub kernel: String,
    pub cmdline: String,
    /// The process hosting the VM.
    #[serde(default)]
    pub pid: u32,
    /// Where that process maps the guest's status page (guest-physical
    /// 0x6000, docs/GUESTS.md), once the guest memory exists: what a
    /// sampler on this host reads with `process_vm_readv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_page_addr: Option<u64>,
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

/// `GET /api/v1/vm.migrate`: the latest migration out of this VM's process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MigrationStatus {
    /// The migration's id, as in its events and logs (16 hex digits).
    pub id: String,
    pub to: String,
    pub done: bool,
    pub progress: migrate::ProgressSnapshot,
    /// The final report, once done.
    pub report: Option<migrate::MigrationReport>,
    /// Why it failed, if it did.
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
    /// `stop-and-copy`, `xen`, `downtime` (the default), `predictive`,
    /// `delayed` or `auto-converge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// The strategy's parameters by name (`--strategy-param KEY=VALUE`),
    /// e.g. `{"alpha": "0.3"}`; numbers may be given as JSON numbers.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "param_values"
    )]
    pub strategy_params: BTreeMap<String, String>,
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
    /// In post-copy, the destination runs the VM only while it holds a
    /// lease of this many ms that the source renews (10 to 60000; default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// In post-copy, how long a broken link may take to come back, ms (0:
    /// give up at once; default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_timeout_ms: Option<u64>,
    /// In post-copy with a lease, how often the destination sends a
    /// transaction back, ms (0: never; default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_interval_ms: Option<u64>,
    /// File holding the migration secret shared with the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// Folder with the cluster CA and this host's certificate and key
    /// (`ferry pki init`): the migration runs inside mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_dir: Option<String>,
    /// With `tls_dir`: the destination's host name, which its certificate
    /// must be issued for (otherwise any member of the cluster may answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_name: Option<String>,
}

/// `GET /api/v1/ping`: the process is up and its API answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub pid: u32,
    /// The VM's identity, as in [`VmStatus::id`].
    pub vm: String,
}

/// `GET /api/v1/version`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Version of the `ferry` program.
    pub version: String,
    /// Version of this API ([`crate::API_VERSION`]), the path's `/api/v1`.
    pub api: String,
    /// Migration protocol versions this process speaks, oldest and newest.
    pub migration_protocol_min: u32,
    pub migration_protocol_max: u32,
    /// Format version of snapshot files it writes and reads.
    pub snapshot_format: u32,
}

/// Answer to `PUT /api/v1/vm.migrate` (202).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationStarted {
    pub started: bool,
    /// The migration's id, as in its events, logs and status.
    pub migration: String,
}

/// Answer to `PUT /api/v1/vm.migrate-cancel` (202).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationCancelling {
    pub cancelling: bool,
}

/// Body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Strategy parameter values: strings, or numbers and booleans taken as
/// their text.
fn param_values<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    let map = BTreeMap::<String, Value>::deserialize(d)?;
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::Text(s) => s,
                Value::Int(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_params_take_strings_and_numbers() {
        let r: MigrateRequest = serde_json::from_str(
            r#"{"to": "h:1", "strategy": "predictive",
                "strategy_params": {"alpha": 0.3, "max-rounds": 10, "hold-budget": "unlimited"}}"#,
        )
        .unwrap();
        let p = &r.strategy_params;
        assert_eq!(p["alpha"], "0.3");
        assert_eq!(p["max-rounds"], "10");
        assert_eq!(p["hold-budget"], "unlimited");
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["strategy_params"]["alpha"], "0.3");
        // Absent: empty, and not written back.
        let r: MigrateRequest = serde_json::from_str(r#"{"to": "h:1"}"#).unwrap();
        assert!(r.strategy_params.is_empty());
        assert!(
            serde_json::to_value(&r)
                .unwrap()
                .get("strategy_params")
                .is_none()
        );
        assert!(
            serde_json::from_str::<MigrateRequest>(
                r#"{"to": "h:1", "strategy_params": {"a": [1]}}"#
            )
            .is_err()
        );
    }
}
