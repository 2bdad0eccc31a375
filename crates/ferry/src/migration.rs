//! Live migration out of this process: one job at a time, driven through
//! the control API and run by the `migrate` engine on its own thread.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::types::MigrateRequest;
use api::{Request, Response, Route};
use migrate::{
    CancelToken, MigrationReport, Progress, ProgressSnapshot, Secret, SourceOptions, VmLocation,
};
use serde::{Deserialize, Serialize};
use units::Bandwidth;

use crate::instance::Instance;

/// What `GET /api/v1/vm.migrate` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    pub to: String,
    pub done: bool,
    pub progress: ProgressSnapshot,
    /// The final report, once done.
    pub report: Option<MigrationReport>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// A migration started from this process.
pub struct Job {
    to: String,
    progress: Arc<Progress>,
    cancel: CancelToken,
    result: Mutex<Option<(MigrationReport, Option<String>)>>,
}

impl Job {
    pub fn status(&self) -> JobStatus {
        let result = self.result.lock().unwrap().clone();
        JobStatus {
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

    /// True once the VM belongs to the destination (or may: in doubt).
    pub fn handed_over(&self) -> bool {
        matches!(
            self.result
                .lock()
                .unwrap()
                .as_ref()
                .map(|r| r.0.vm_location),
            Some(VmLocation::Destination | VmLocation::Unknown)
        )
    }
}

/// Builds the engine's options from an API request, or says what is wrong.
fn options(req: &MigrateRequest) -> Result<SourceOptions, String> {
    let name = req.strategy.as_deref().unwrap_or(migrate::DEFAULT_STRATEGY);
    let strategy = name
        .parse::<migrate::StrategyKind>()
        .map_err(|e| e.to_string())?
        .build();
    let secret_path = req
        .secret_file
        .as_deref()
        .ok_or("a migration secret is required: give secret_file (--secret-file)")?;
    let secret = Secret::from_file(Path::new(secret_path)).map_err(|e| e.to_string())?;
    let mut opts = SourceOptions::new(secret, strategy);
    if let Some(bps) = req.max_bandwidth_bps {
        opts.max_bandwidth =
            Some(Bandwidth::from_bits_per_sec(bps).ok_or("max_bandwidth_bps must be positive")?);
    }
    if let Some(bps) = req.link_bandwidth_bps {
        opts.link_bandwidth =
            Some(Bandwidth::from_bits_per_sec(bps).ok_or("link_bandwidth_bps must be positive")?);
    }
    if let Some(ms) = req.max_downtime_ms {
        if ms == 0 {
            return Err("max_downtime_ms must be positive".into());
        }
        opts.max_downtime = Duration::from_millis(ms);
    }
    Ok(opts)
}

/// Starts a migration job for `host`.
fn start(host: &Arc<Instance>, req: MigrateRequest) -> Response {
    let opts = match options(&req) {
        Ok(o) => o,
        Err(e) => return Response::error(400, e),
    };
    let state = host.state_name();
    let mut slot = host.migration.lock().unwrap();
    if let Some(job) = slot.as_ref() {
        if job.running() {
            return Response::error(409, format!("a migration to {} is already running", job.to));
        }
        if job.handed_over() {
            return Response::error(409, "the VM has already migrated away");
        }
    }
    match state {
        api::types::vm_state::RUNNING | api::types::vm_state::PAUSED => {}
        s => return Response::error(409, format!("cannot migrate: the VM is {s}")),
    }
    let job = Arc::new(Job {
        to: req.to.clone(),
        progress: opts.progress.clone(),
        cancel: opts.cancel.clone(),
        result: Mutex::new(None),
    });
    *slot = Some(job.clone());
    drop(slot);
    let h = host.clone();
    let spawned = std::thread::Builder::new()
        .name("migration".into())
        .spawn(move || {
            let mut src = crate::adapter::Source::new(&h.vm);
            let result = match migrate::migrate(&mut src, &req.to, opts) {
                Ok(report) => (report, None),
                Err(f) => (f.report.clone(), Some(f.error.to_string())),
            };
            *job.result.lock().unwrap() = Some(result);
        });
    match spawned {
        Ok(_) => Response::json(202, &serde_json::json!({ "started": true })),
        Err(e) => Response::error(500, format!("cannot start the migration thread: {e}")),
    }
}

pub fn handle(host: &Arc<Instance>, route: Route, req: &Request) -> Response {
    match route {
        Route::Migrate => match req.json::<MigrateRequest>() {
            Ok(body) => start(host, body),
            Err(resp) => resp,
        },
        Route::MigrateProgress => match host.migration.lock().unwrap().as_ref() {
            Some(job) => Response::ok(&job.status()),
            None => Response::error(404, "no migration has been started"),
        },
        Route::MigrateCancel => match host.migration.lock().unwrap().as_ref() {
            Some(job) if job.running() => {
                job.cancel.cancel();
                Response::json(202, &serde_json::json!({ "cancelling": true }))
            }
            _ => Response::error(409, "no migration is running"),
        },
        _ => Response::error(404, "not a migration route"),
    }
}
