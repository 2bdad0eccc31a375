//! The API's routes, and resolution of a request to one of them.
//! `crates/api/openapi.yaml` documents the same routes; a test keeps the
//! two in step.

use crate::message::{Method, Request, Response};

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
/// Newline-delimited [`crate::events::Event`]s as they happen (GET).
pub const EVENTS: &str = "/api/v1/events";
/// Liveness: answers as soon as the socket is bound (GET, [`crate::types::Ping`]).
pub const PING: &str = "/api/v1/ping";
/// Versions of the process and its formats (GET, [`crate::types::VersionInfo`]).
pub const VERSION: &str = "/api/v1/version";

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
    Events,
    Ping,
    Version,
}

impl Route {
    pub const ALL: [Route; 12] = [
        Route::Status,
        Route::Pause,
        Route::Resume,
        Route::Snapshot,
        Route::Migrate,
        Route::MigrateProgress,
        Route::MigrateCancel,
        Route::MigratePostcopy,
        Route::Shutdown,
        Route::Events,
        Route::Ping,
        Route::Version,
    ];

    pub fn method(self) -> Method {
        match self {
            Route::Status
            | Route::MigrateProgress
            | Route::Events
            | Route::Ping
            | Route::Version => Method::Get,
            Route::Pause
            | Route::Resume
            | Route::Snapshot
            | Route::Migrate
            | Route::MigrateCancel
            | Route::MigratePostcopy
            | Route::Shutdown => Method::Put,
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
            Route::Events => EVENTS,
            Route::Ping => PING,
            Route::Version => VERSION,
        }
    }

    /// The methods `path` accepts, in [`Route::ALL`] order (empty if unknown).
    pub fn allowed(path: &str) -> Vec<Method> {
        Route::ALL
            .iter()
            .filter(|r| r.path() == path)
            .map(|r| r.method())
            .collect()
    }

    /// The route a request asks for; otherwise the error response to send:
    /// 404 for an unknown path, 405 with an `Allow` header for a known path
    /// with the wrong method.
    pub fn resolve(req: &Request) -> Result<Route, Response> {
        if let Some(route) = Route::ALL
            .into_iter()
            .find(|r| r.path() == req.path && r.method() == req.method)
        {
            return Ok(route);
        }
        let allowed: Vec<String> = Route::allowed(&req.path)
            .iter()
            .map(Method::to_string)
            .collect();
        if allowed.is_empty() {
            return Err(Response::error(
                404,
                format!("unknown API endpoint {} {}", req.method, req.path),
            ));
        }
        Err(Response::error(
            405,
            format!(
                "method {} not allowed on {} (use {})",
                req.method,
                req.path,
                allowed.join(" or ")
            ),
        )
        .with_header("Allow", allowed.join(", ")))
    }
}
