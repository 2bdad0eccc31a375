//! The API's routes, and resolution of a request to one of them.

use crate::server::{Method, Request, Response};

/// Status of the VM (GET).
pub const VM: &str = "/api/v1/vm";
pub const VM_PAUSE: &str = "/api/v1/vm.pause";
pub const VM_RESUME: &str = "/api/v1/vm.resume";
/// Snapshot to a file (PUT, [`crate::types::SnapshotRequest`]).
pub const VM_SNAPSHOT: &str = "/api/v1/vm.snapshot";
/// Start a migration (PUT, [`crate::types::MigrateRequest`]); its progress (GET).
pub const VM_MIGRATE: &str = "/api/v1/vm.migrate";
pub const VM_MIGRATE_CANCEL: &str = "/api/v1/vm.migrate-cancel";
/// Switch a running pre-copy to post-copy now (PUT), like QEMU's
/// `migrate-start-postcopy`.
pub const VM_MIGRATE_POSTCOPY: &str = "/api/v1/vm.migrate-postcopy";
pub const VM_SHUTDOWN: &str = "/api/v1/vm.shutdown";

/// One operation of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    Status,
    Pause,
    Resume,
    Snapshot,
    Migrate,
    MigrateProgress,
    MigrateCancel,
    MigratePostcopy,
    Shutdown,
}

impl Route {
    pub const ALL: [Route; 9] = [
        Route::Status,
        Route::Pause,
        Route::Resume,
        Route::Snapshot,
        Route::Migrate,
        Route::MigrateProgress,
        Route::MigrateCancel,
        Route::MigratePostcopy,
        Route::Shutdown,
    ];

    pub fn method(self) -> Method {
        match self {
            Route::Status | Route::MigrateProgress => Method::Get,
            _ => Method::Put,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Route::Status => VM,
            Route::Pause => VM_PAUSE,
            Route::Resume => VM_RESUME,
            Route::Snapshot => VM_SNAPSHOT,
            Route::Migrate | Route::MigrateProgress => VM_MIGRATE,
            Route::MigrateCancel => VM_MIGRATE_CANCEL,
            Route::MigratePostcopy => VM_MIGRATE_POSTCOPY,
            Route::Shutdown => VM_SHUTDOWN,
        }
    }

    /// The route a request asks for; otherwise the error response to send:
    /// 404 for an unknown path, 405 for a known path with the wrong method.
    pub fn resolve(req: &Request) -> Result<Route, Response> {
        let mut path_known = false;
        for route in Route::ALL {
            if route.path() == req.path {
                path_known = true;
                if route.method() == req.method {
                    return Ok(route);
                }
            }
        }
        if path_known {
            let allowed: Vec<String> = Route::ALL
                .iter()
                .filter(|r| r.path() == req.path)
                .map(|r| r.method().to_string())
                .collect();
            Err(Response::error(
                405,
                format!(
                    "method {} not allowed on {} (use {})",
                    req.method,
                    req.path,
                    allowed.join(" or ")
                ),
            ))
        } else {
            Err(Response::error(
                404,
                format!("unknown API endpoint {} {}", req.method, req.path),
            ))
        }
    }
}
