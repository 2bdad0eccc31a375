//! Live migration out of this process: one job, run by the `migrate`
//! engine on its own thread. A job knows the VM it moves and where to
//! publish its events, not the [`Instance`](crate::instance::Instance)
//! that holds it.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::events::{EventKind, RoundSummary};
use api::types::{MigrateRequest, MigrationStatus};
use migrate::{
    CancelToken, Limits, MigrationEvent, MigrationReport, OnTimeout, Outcome, PostcopySwitch,
    Progress, Secret, SourceOptions, VmLocation,
};
use units::Bandwidth;
use vmm::Vm;

use crate::events::EventHub;

/// Why a migration was not started.
#[derive(Debug)]
pub enum StartError {
    /// The request is not valid.
    Invalid(String),
    /// A migration is already running.
    Running { to: String },
    /// The VM belongs to a destination already.
    Migrated,
    /// The VM cannot migrate in this lifecycle state.
    State(&'static str),
    /// The migration thread could not be started.
    Thread(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Invalid(why) => f.write_str(why),
            StartError::Running { to } => write!(f, "a migration to {to} is already running"),
            StartError::Migrated => f.write_str("the VM has already migrated away"),
            StartError::State(s) => write!(f, "cannot migrate: the VM is {s}"),
            StartError::Thread(e) => write!(f, "cannot start the migration thread: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A migration started from this process.
pub struct Job {
    id: String,
    to: String,
    progress: Arc<Progress>,
    cancel: CancelToken,
    switch: PostcopySwitch,
    result: Mutex<Option<(MigrationReport, Option<String>)>>,
}

impl Job {
    /// Starts migrating `vm` to `to` on a new thread; its events go to `events`.
    pub fn spawn(
        vm: Arc<Vm>,
        to: String,
        opts: SourceOptions,
        events: Arc<EventHub>,
    ) -> Result<Arc<Job>, StartError> {
        Job::start(vm, to, opts, events, |src, to, opts| {
            migrate::migrate(src, to, opts)
        })
    }

    /// Takes up, on a new thread, the post-copy `rec` that a killed
    /// process left of `vm` (retired, its memory the shared file).
    pub fn spawn_resumed(
        vm: Arc<Vm>,
        to: String,
        rec: migrate::PostcopyResume,
        opts: SourceOptions,
        events: Arc<EventHub>,
    ) -> Result<Arc<Job>, StartError> {
        let mut opts = opts;
        opts.migration_id = rec.migration_id;
        Job::start(vm, to, opts, events, move |src, to, opts| {
            migrate::resume_postcopy(src, to, rec, opts)
        })
    }

    fn start(
        vm: Arc<Vm>,
        to: String,
        mut opts: SourceOptions,
        events: Arc<EventHub>,
        run: impl FnOnce(
            &mut crate::adapter::Source<'_>,
            &str,
            SourceOptions,
        ) -> Result<MigrationReport, Box<migrate::MigrationFailure>>
        + Send
        + 'static,
    ) -> Result<Arc<Job>, StartError> {
        let id = format!("{:016x}", opts.migration_id);
        opts.observer = Some(observer(id.clone(), to.clone(), events.clone()));
        let job = Arc::new(Job {
            id: id.clone(),
            to: to.clone(),
            progress: opts.progress.clone(),
            cancel: opts.cancel.clone(),
            switch: opts.postcopy_switch.clone(),
            result: Mutex::new(None),
        });
        let j = job.clone();
        let strategy = opts.strategy.name().to_string();
        let hub = events.clone();
        std::thread::Builder::new()
            .name("migration".into())
            .spawn(move || {
                let mut src = crate::adapter::Source::new(&vm).with_events(hub);
                let result = match run(&mut src, &to, opts) {
                    Ok(report) => (report, None),
                    Err(f) => (f.report.clone(), Some(f.error.to_string())),
                };
                *j.result.lock().unwrap() = Some(result);
            })
            .map_err(StartError::Thread)?;
        events.publish(EventKind::MigrationStarted {
            migration: id,
            to: job.to.clone(),
            strategy,
        });
        Ok(job)
    }

    /// The migration's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The destination's address.
    pub fn to(&self) -> &str {
        &self.to
    }

    pub fn status(&self) -> MigrationStatus {
        let result = self.result.lock().unwrap().clone();
        MigrationStatus {
            id: self.id.clone(),
            to: self.to.clone(),
            done: result.is_some(),
            progress: self.progress.snapshot(),
            error: result.as_ref().and_then(|r| r.1.clone()),
            report: result.map(|r| r.0),
        }
    }

    pub fn running(&self) -> bool {
        self.result.lock().unwrap().is_none()
    }

    /// True once the VM belongs to the destination (or may: in doubt), or
    /// runs nowhere after an interrupted post-copy.
    pub fn handed_over(&self) -> bool {
        matches!(
            self.result
                .lock()
                .unwrap()
                .as_ref()
                .map(|r| r.0.vm_location),
            Some(VmLocation::Destination | VmLocation::Unknown | VmLocation::Nowhere)
        )
    }

    /// Asks the engine to roll back; it stops at its next check.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Asks a running pre-copy to switch to post-copy at its next batch;
    /// refused when the destination cannot take the VM that way.
    pub fn switch_to_postcopy(&self) -> Result<(), migrate::PostcopyRefused> {
        self.switch.request()
    }
}

/// Forwards the engine's events for migration `id` to `events`.
fn observer(id: String, to: String, events: Arc<EventHub>) -> migrate::Observer {
    Arc::new(move |e: &MigrationEvent<'_>| {
        let migration = id.clone();
        let kind = match e {
            MigrationEvent::Phase(p) => EventKind::MigrationPhase {
                migration,
                phase: serde_json::to_value(p)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            },
            MigrationEvent::Round(r) => EventKind::MigrationRound {
                migration,
                round: RoundSummary {
                    round: r.round,
                    stop_and_copy: r.stop_and_copy,
                    pages_pending: r.pages_pending,
                    pages_sent: r.pages_sent,
                    pages_dirtied: r.pages_dirtied,
                    bytes: r.bytes,
                    duration_ms: r.duration_ms,
                    transfer_rate_bps: r.transfer_rate_bps,
                    dirty_rate_bps: r.dirty_rate_bps,
                },
            },
            MigrationEvent::Finished(r) => finished(migration, &to, r),
        };
        events.publish(kind);
    })
}

/// The event that ends a migration, from its report.
fn finished(migration: String, to: &str, r: &MigrationReport) -> EventKind {
    match &r.outcome {
        Outcome::Completed => EventKind::MigrationCompleted {
            migration,
            to: to.to_string(),
            downtime_ms: r.downtime_ms,
            total_time_ms: r.total_time_ms,
            bytes_sent: r.bytes_sent,
            rounds: r.rounds,
        },
        Outcome::Cancelled => EventKind::MigrationRolledBack {
            migration,
            cancelled: true,
            error: "cancelled".into(),
        },
        Outcome::Failed(error) => EventKind::MigrationRolledBack {
            migration,
            cancelled: false,
            error: error.clone(),
        },
        Outcome::InDoubt(error) => EventKind::MigrationInDoubt {
            migration,
            error: error.clone(),
        },
        Outcome::Interrupted(error) => EventKind::MigrationInterrupted {
            migration,
            error: error.clone(),
        },
        Outcome::Recovered(error) => EventKind::MigrationRolledBack {
            migration,
            cancelled: false,
            error: error.clone(),
        },
    }
}

/// Post-copy leases accepted: long enough to renew over a loaded link,
/// short enough that a lapse is noticed.
pub const LEASE_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(10)..=Duration::from_secs(60);

/// Builds the engine's options from an API request, or says what is wrong.
/// Every field is checked before the secret file is read.
pub fn options(req: &MigrateRequest) -> Result<SourceOptions, StartError> {
    let invalid = |e: &dyn std::fmt::Display| StartError::Invalid(e.to_string());
    let name = req.strategy.as_deref().unwrap_or(migrate::DEFAULT_STRATEGY);
    let params =
        migrate::StrategyParams::from_map(&req.strategy_params).map_err(|e| invalid(&e))?;
    let strategy = name
        .parse::<migrate::StrategyKind>()
        .map_err(|e| invalid(&e))?
        .build_with(&params)
        .map_err(|e| invalid(&e))?;
    let rate = |bps: Option<u64>, what: &str| {
        bps.map(|b| {
            Bandwidth::from_bits_per_sec(b)
                .ok_or_else(|| invalid(&format!("{what} must be positive")))
        })
        .transpose()
    };
    let max_bandwidth = rate(req.max_bandwidth_bps, "max_bandwidth_bps")?;
    let link_bandwidth = rate(req.link_bandwidth_bps, "link_bandwidth_bps")?;
    let max_downtime = req
        .max_downtime_ms
        .map(|ms| {
            Duration::try_from_secs_f64(ms / 1e3)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| invalid(&"max_downtime_ms must be a positive number"))
        })
        .transpose()?;
    let limits = Limits {
        max_rounds: req.max_rounds,
        max_time: req.timeout_ms.map(Duration::from_millis),
    };
    limits.check().map_err(|e| invalid(&e))?;
    let on_timeout = match req.on_timeout.as_deref() {
        Some(name) => name.parse::<OnTimeout>().map_err(|e| invalid(&e))?,
        None => OnTimeout::default(),
    };
    let lease = req
        .lease_ms
        .map(|ms| {
            Some(Duration::from_millis(ms))
                .filter(|l| LEASE_RANGE.contains(l))
                .ok_or_else(|| invalid(&format!("lease_ms must be from 10 to 60000 (got {ms})")))
        })
        .transpose()?;
    let secret_path = req.secret_file.as_deref().ok_or_else(|| {
        invalid(&"a migration secret is required: give secret_file (--secret-file)")
    })?;
    let secret = Secret::from_file(Path::new(secret_path)).map_err(|e| invalid(&e))?;
    let mut tls = req
        .tls_dir
        .as_deref()
        .map(|d| tls::Credentials::load(Path::new(d)))
        .transpose()
        .map_err(|e| invalid(&e))?;
    if let Some(host) = &req.tls_name {
        let creds = tls
            .as_ref()
            .ok_or_else(|| invalid(&"tls_name needs tls_dir (--tls-name needs --tls-dir)"))?;
        tls = Some(creds.expecting(host).map_err(|e| invalid(&e))?);
    }
    let mut opts = SourceOptions::new(secret, strategy);
    opts.tls = tls;
    opts.max_bandwidth = max_bandwidth;
    opts.link_bandwidth = link_bandwidth;
    if let Some(d) = max_downtime {
        opts.max_downtime = d;
    }
    opts.limits = limits;
    opts.on_timeout = on_timeout;
    if let Some(l) = lease {
        opts.lease = l;
    }
    if let Some(ms) = req.recovery_timeout_ms {
        opts.recovery_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = req.sync_interval_ms {
        opts.sync_interval = Duration::from_millis(ms);
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: serde_json::Value) -> MigrateRequest {
        let mut v = serde_json::json!({ "to": "127.0.0.1:1", "secret_file": "/dev/null" });
        v.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    fn refused(json: serde_json::Value) -> String {
        match options(&req(json)) {
            Err(StartError::Invalid(why)) => why,
            Err(e) => panic!("not a bad request: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn the_api_request_carries_the_convergence_control() {
        // A secret file must hold a valid secret; /dev/null does not, so
        // check the fields before the secret is read.
        for (json, want) in [
            (serde_json::json!({ "max_rounds": 0 }), "between 1 and"),
            (serde_json::json!({ "timeout_ms": 0 }), "greater than zero"),
            (serde_json::json!({ "max_downtime_ms": 0 }), "positive"),
            (serde_json::json!({ "max_downtime_ms": -1.0 }), "positive"),
            (
                serde_json::json!({ "lease_ms": 5 }),
                "lease_ms must be from 10 to 60000",
            ),
            (
                serde_json::json!({ "lease_ms": 60001 }),
                "lease_ms must be from 10 to 60000",
            ),
            (serde_json::json!({ "on_timeout": "maybe" }), "unknown"),
            (serde_json::json!({ "max_bandwidth_bps": 0 }), "positive"),
        ] {
            let why = refused(json.clone());
            assert!(why.contains(want), "{json}: {why}");
        }
    }
}
