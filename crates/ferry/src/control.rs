//! The control API of a hosted VM: routes mapped onto [`Instance`].

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use api::types::{MigrateRequest, SnapshotRequest, SnapshotResponse, VmStatus, vm_state};
use api::{Request, Response, Route, Server};

use crate::instance::Instance;
use crate::migration::StartError;

/// Starts serving `host` on the Unix socket `path`.
pub fn start(host: Arc<Instance>, path: &Path) -> anyhow::Result<Server> {
    Ok(Server::bind(path, move |req| handle(&host, req))?)
}

/// A `ferry receive` process's VM: arriving (its status says where its
/// memory is, for samplers), then hosted here.
#[derive(Default)]
pub struct Arrival {
    arriving: Mutex<Option<VmStatus>>,
    host: OnceLock<Arc<Instance>>,
}

impl Arrival {
    /// The incoming VM's memory exists; pages are about to arrive.
    pub fn arriving(&self, vm: &vmm::Vm) {
        let cfg = vm.config();
        *self.arriving.lock().unwrap_or_else(|e| e.into_inner()) = Some(VmStatus {
            state: vm_state::RECEIVING.to_string(),
            memory_bytes: cfg.memory_bytes,
            vcpus: cfg.vcpus,
            kernel: cfg.kernel.clone(),
            cmdline: cfg.cmdline.clone(),
            pid: std::process::id(),
            status_page_addr: crate::instance::status_page_addr(vm),
            ..VmStatus::default()
        });
    }

    /// The VM arrived and runs here: the API now serves it.
    pub fn arrived(&self, host: Arc<Instance>) {
        let _ = self.host.set(host);
    }
}

/// Serves the API of a `ferry receive` process on `path` from the start:
/// `receiving` until the VM arrived, then the VM's API.
pub fn start_receiving(arrival: Arc<Arrival>, path: &Path) -> anyhow::Result<Server> {
    Ok(Server::bind(path, move |req| match arrival.host.get() {
        Some(host) => handle(host, req),
        None => receiving(&arrival, req),
    })?)
}

fn receiving(arrival: &Arrival, req: Request) -> Response {
    match Route::resolve(&req) {
        Err(resp) => resp,
        Ok(Route::Status) => {
            let arriving = arrival.arriving.lock().unwrap_or_else(|e| e.into_inner());
            Response::ok(&arriving.clone().unwrap_or_else(|| VmStatus {
                state: vm_state::RECEIVING.to_string(),
                pid: std::process::id(),
                ..VmStatus::default()
            }))
        }
        Ok(_) => Response::error(409, "no VM runs here yet: a migration is arriving"),
    }
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
        pid: std::process::id(),
        status_page_addr: crate::instance::status_page_addr(&host.vm),
        guest: host.guest_counters(),
        exit_status,
        error,
    }
}
