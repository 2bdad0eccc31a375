//! Events of a VM and its migrations, as `GET /api/v1/events` streams them:
//! one JSON object per line, in the order they happened.
//!
//! ```text
//! {"seq":7,"unix_ms":1767225600123,"vm":"web-1","type":"vm-paused","cause":"operator"}
//! {"seq":8,"unix_ms":1767225600500,"vm":"web-1","type":"migration-phase","migration":"5f0c...","phase":"iterative"}
//! ```
//!
//! A follower first gets the process's latest events (up to 64), then
//! each as it happens. `seq` counts every event the VM's process
//! published, so a gap in a follower's sequence means it lost events; it is
//! also told with an [`EventKind::EventsLost`] line, sent when a follower
//! reads too slowly for its bounded queue (the VM and the migration never
//! wait for a follower).

use serde::{Deserialize, Serialize};

/// One event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position among the events this process published, from 1.
    pub seq: u64,
    /// When it happened, milliseconds since the UNIX epoch.
    pub unix_ms: u64,
    /// The VM's identity ([`crate::types::VmStatus::id`]).
    pub vm: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened; the JSON field `type` names the variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EventKind {
    /// The API answers; the guest is not running yet (state `booting` or
    /// `incoming`).
    VmCreated {
        state: String,
    },
    /// The guest exists and is running or paused (`state`): booted,
    /// restored, or received by a migration.
    VmStarted {
        state: String,
    },
    VmPaused {
        cause: Cause,
    },
    VmResumed {
        cause: Cause,
    },
    /// The VM ended here for good: `reason` is `guest-exit` (with
    /// `exit_status`), `crashed` (with `error`), `shutdown` or `migrated`.
    VmStopped {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_status: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A migration out of this process began.
    MigrationStarted {
        migration: String,
        to: String,
        strategy: String,
    },
    /// The migration entered `phase`: setup, iterative, stop-and-copy,
    /// state-transfer, commit, done or rolled-back.
    MigrationPhase {
        migration: String,
        phase: String,
    },
    /// One round ended (the stop-and-copy round too).
    MigrationRound {
        migration: String,
        #[serde(flatten)]
        round: RoundSummary,
    },
    /// The destination runs the VM.
    MigrationCompleted {
        migration: String,
        to: String,
        /// Pause on the source to resume on the destination.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        downtime_ms: Option<f64>,
        total_time_ms: f64,
        bytes_sent: u64,
        rounds: u32,
    },
    /// The migration failed or was cancelled before Commit: the VM runs here.
    MigrationRolledBack {
        migration: String,
        cancelled: bool,
        error: String,
    },
    /// Commit went out but its acknowledgement never came: the VM is
    /// retired here and may run on the destination (docs/PROTOCOL.md).
    MigrationInDoubt {
        migration: String,
        error: String,
    },
    /// Post-copy broke off: the VM resumed on the destination without all
    /// its memory, and neither side can run it (docs/SAFETY.md).
    MigrationInterrupted {
        migration: String,
        error: String,
    },
    /// A VM arrived by live migration and runs here.
    MigrationReceived {
        migration: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    /// This follower read too slowly: `count` events were dropped for it
    /// just before this line.
    EventsLost {
        count: u64,
    },
}

/// Who paused or resumed the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// A request on the API (`ferry ctl pause`/`resume`).
    Operator,
    /// A snapshot being written.
    Snapshot,
    /// A migration: the stop-and-copy pause, or the resume of a rollback.
    Migration,
    /// The post-copy lease: it lapsed with no renewal from the source (the
    /// destination fenced itself), or a renewal arrived.
    Lease,
}

/// One migration round, as the event stream tells it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    pub round: u32,
    /// The VM was paused (the last round).
    pub stop_and_copy: bool,
    pub pages_pending: u64,
    pub pages_sent: u64,
    pub pages_dirtied: u64,
    pub bytes: u64,
    pub duration_ms: f64,
    pub transfer_rate_bps: f64,
    pub dirty_rate_bps: f64,
}

impl EventKind {
    /// The `type` field of this kind.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::VmCreated { .. } => "vm-created",
            EventKind::VmStarted { .. } => "vm-started",
            EventKind::VmPaused { .. } => "vm-paused",
            EventKind::VmResumed { .. } => "vm-resumed",
            EventKind::VmStopped { .. } => "vm-stopped",
            EventKind::MigrationStarted { .. } => "migration-started",
            EventKind::MigrationPhase { .. } => "migration-phase",
            EventKind::MigrationRound { .. } => "migration-round",
            EventKind::MigrationCompleted { .. } => "migration-completed",
            EventKind::MigrationRolledBack { .. } => "migration-rolled-back",
            EventKind::MigrationInDoubt { .. } => "migration-in-doubt",
            EventKind::MigrationInterrupted { .. } => "migration-interrupted",
            EventKind::MigrationReceived { .. } => "migration-received",
            EventKind::EventsLost { .. } => "events-lost",
        }
    }

    /// The migration this event is about, if any.
    pub fn migration(&self) -> Option<&str> {
        match self {
            EventKind::MigrationStarted { migration, .. }
            | EventKind::MigrationPhase { migration, .. }
            | EventKind::MigrationRound { migration, .. }
            | EventKind::MigrationCompleted { migration, .. }
            | EventKind::MigrationRolledBack { migration, .. }
            | EventKind::MigrationInDoubt { migration, .. }
            | EventKind::MigrationInterrupted { migration, .. }
            | EventKind::MigrationReceived { migration, .. } => Some(migration),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_flat_json_objects_tagged_by_type() {
        let e = Event {
            seq: 3,
            unix_ms: 10,
            vm: "web-1".into(),
            kind: EventKind::MigrationRound {
                migration: "ab".into(),
                round: RoundSummary {
                    round: 2,
                    pages_sent: 5,
                    ..Default::default()
                },
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "migration-round");
        assert_eq!(v["type"], e.kind.name());
        assert_eq!(v["round"], 2);
        assert_eq!(v["pages_sent"], 5);
        assert_eq!(v["vm"], "web-1");
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
        let paused = EventKind::VmPaused {
            cause: Cause::Operator,
        };
        assert_eq!(
            serde_json::to_value(&paused).unwrap(),
            serde_json::json!({"type": "vm-paused", "cause": "operator"})
        );
    }
}
