//! The control API of a hosted VM: routes mapped onto [`Instance`].

use std::path::Path;
use std::sync::Arc;

use api::types::{MigrateRequest, SnapshotRequest, SnapshotResponse, VmStatus, vm_state};
use api::{Request, Response, Route, Server};

use crate::instance::Instance;
use crate::migration::StartError;

/// Starts serving `host` on the Unix socket `path`.
pub fn start(host: Arc<Instance>, path: &Path) -> anyhow::Result<Server> {
    Ok(Server::bind(path, move |req| handle(&host, req))?)
}

fn handle(host: &Arc<Instance>, req: Request) -> Response {
    let route = match Route::resolve(&req) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match route {
        Route::Status => Response::ok(&status(host)),
        Route::Pause => match host.state_name() {
            vm_state::RUNNING | vm_state::PAUSED => match host.vm.pause() {
                Ok(()) => Response::no_content(),
                Err(e) => Response::error(500, e.to_string()),
            },
            s => Response::error(409, format!("cannot pause: the VM is {s}")),
        },
        Route::Resume => match host.state_name() {
            vm_state::RUNNING | vm_state::PAUSED => match host.vm.resume() {
                Ok(()) => Response::no_content(),
                Err(e) => Response::error(500, e.to_string()),
            },
            s => Response::error(409, format!("cannot resume: the VM is {s}")),
        },
        Route::Snapshot => {
            let body: SnapshotRequest = match req.json() {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            match host.state_name() {
                vm_state::RUNNING | vm_state::PAUSED => {}
                s => return Response::error(409, format!("cannot snapshot: the VM is {s}")),
            }
            match host.snapshot(Path::new(&body.path)) {
                Ok(d) => Response::ok(&SnapshotResponse {
                    bytes: d.bytes,
                    pages: d.pages,
                    zero_pages: d.zero_pages,
                    duration_ms: d.duration_ms.round() as u64,
                }),
                Err(e) => Response::error(500, format!("{e:#}")),
            }
        }
        Route::Shutdown => {
            host.request_shutdown();
            Response::no_content()
        }
        Route::Migrate => match req.json::<MigrateRequest>() {
            Ok(body) => match host.start_migration(body) {
                Ok(()) => Response::json(202, &serde_json::json!({ "started": true })),
                Err(e) => Response::error(start_error_status(&e), e.to_string()),
            },
            Err(resp) => resp,
        },
        Route::MigrateProgress => match host.migration() {
            Some(job) => Response::ok(&job.status()),
            None => Response::error(404, "no migration has been started"),
        },
        Route::MigrateCancel => match host.migration() {
            Some(job) if job.running() => {
                job.cancel();
                Response::json(202, &serde_json::json!({ "cancelling": true }))
            }
            _ => Response::error(409, "no migration is running"),
        },
        Route::MigratePostcopy => match host.migration() {
            Some(job) if job.running() => match job.switch_to_postcopy() {
                Ok(()) => Response::json(202, &serde_json::json!({ "switching": true })),
                Err(e) => Response::error(409, e.to_string()),
            },
            _ => Response::error(409, "no migration is running"),
        },
    }
}

fn start_error_status(e: &StartError) -> u16 {
    match e {
        StartError::Invalid(_) => 400,
        StartError::Running { .. } | StartError::Migrated | StartError::State(_) => 409,
        StartError::Thread(_) => 500,
    }
}

/// What `GET /api/v1/vm` answers.
pub fn status(host: &Instance) -> VmStatus {
    let cfg = host.vm.config();
    let (exit_status, error) = match host.vm.run_state() {
        vmm::RunState::Exited(vmm::ExitReason::Guest(c)) => (Some(c), None),
        vmm::RunState::Exited(vmm::ExitReason::Crashed(m)) => (None, Some(m)),
        _ => (None, None),
    };
    VmStatus {
        state: host.state_name().to_string(),
        memory_bytes: cfg.memory_bytes,
        vcpus: cfg.vcpus,
        kernel: cfg.kernel.clone(),
        cmdline: cfg.cmdline.clone(),
        guest: host.guest_counters(),
        exit_status,
        error,
    }
}
