//! Ferry's control API: HTTP/1.1 with JSON bodies on a Unix socket, in the
//! style of Cloud Hypervisor's API socket. `openapi.yaml` beside this
//! crate's manifest is its contract (OpenAPI 3), kept in step with
//! [`Route`] by a test.
//!
//! - [`types`]: request and response bodies.
//! - [`events`]: what `GET /api/v1/events` streams.
//! - [`routes`]: the endpoints, and [`Route::resolve`] to dispatch a request
//!   (404 unknown path, 405 wrong method with `Allow`).
//! - [`Server`]: serves a socket by calling a handler `Fn(Request) -> Response`.
//! - [`Client`]: talks to a server (used by `ferry ctl` and `ferry migrate`).
//!
//! Errors are JSON `{"error": "..."}` ([`types::ErrorBody`]) with an HTTP
//! error status. Migration progress and reports
//! ([`types::MigrationStatus`]) have the shape the `migrate` crate defines.

mod client;
pub mod events;
mod message;
pub mod routes;
mod server;
pub mod types;

pub use client::{Client, ClientError, DEFAULT_TIMEOUT, EventLines};
pub use message::{LineStream, Method, Request, Response};
pub use routes::Route;
pub use server::{MAX_REQUEST_BODY, MAX_STREAMS, Server, ServerError};

/// Version of the API, as in its paths (`/api/v1/...`).
pub const API_VERSION: &str = "v1";
