//! The control API of a hosted VM: routes mapped onto [`Instance`].

use std::path::Path;
use std::sync::Arc;

use api::types::{
    MigrateRequest, MigrationCancelling, MigrationStarted, Ping, SnapshotRequest, SnapshotResponse,
    VersionInfo, VmStatus, vm_state,
};
use api::{Request, Response, Route, Server};

use crate::instance::{Instance, StateError};
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
        Route::Ping => Response::ok(&Ping {
            pid: std::process::id(),
            vm: host.id().to_string(),
        }),
        Route::Version => Response::ok(&version()),
        Route::Events => Response::stream(
            host.events()
                .follow()
                .filter_map(|e| serde_json::to_value(e).ok()),
        ),
        Route::Pause => state_change(host.pause()),
        Route::Resume => state_change(host.resume()),
        Route::Snapshot => snapshot(host, &req),
        Route::Shutdown => {
            host.request_shutdown();
            Response::no_content()
        }
        Route::Migrate => match req.json::<MigrateRequest>() {
            Ok(body) => match host.start_migration(body) {
                Ok(job) => Response::json(
                    202,
                    &MigrationStarted {
                        started: true,
                        migration: job.id().to_string(),
                    },
                ),
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
                Response::json(202, &MigrationCancelling { cancelling: true })
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

fn state_change(result: Result<(), StateError>) -> Response {
    match result {
        Ok(()) => Response::no_content(),
        Err(e @ StateError::Wrong { .. }) => Response::error(409, e.to_string()),
        Err(e @ StateError::Vmm(_)) => Response::error(500, e.to_string()),
    }
}

fn snapshot(host: &Instance, req: &Request) -> Response {
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

fn start_error_status(e: &StartError) -> u16 {
    match e {
        StartError::Invalid(_) => 400,
        StartError::Running { .. } | StartError::Migrated | StartError::State(_) => 409,
        StartError::Thread(_) => 500,
    }
}

/// What `GET /api/v1/version` answers.
pub fn version() -> VersionInfo {
    VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api: api::API_VERSION.to_string(),
        migration_protocol_min: wire::MIN_PROTOCOL_VERSION.into(),
        migration_protocol_max: wire::PROTOCOL_VERSION.into(),
        snapshot_format: vmstate::FORMAT_VERSION,
    }
}

/// What `GET /api/v1/vm` answers.
pub fn status(host: &Instance) -> VmStatus {
    let mut status = VmStatus {
        id: host.id().to_string(),
        state: host.state_name().to_string(),
        pid: std::process::id(),
        status_page_addr: host.status_page_addr(),
        ..Default::default()
    };
    let Some(vm) = host.vm() else {
        return status;
    };
    let cfg = vm.config();
    (status.exit_status, status.error) = match vm.run_state() {
        vmm::RunState::Exited(vmm::ExitReason::Guest(c)) => (Some(c), None),
        vmm::RunState::Exited(vmm::ExitReason::Crashed(m)) => (None, Some(m)),
        _ => (None, None),
    };
    status.memory_bytes = cfg.memory_bytes;
    status.vcpus = cfg.vcpus;
    status.kernel = cfg.kernel.clone();
    status.cmdline = cfg.cmdline.clone();
    status.guest = host.guest_counters();
    status
}
