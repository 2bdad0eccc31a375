//! Ferry's control API: HTTP/1.1 with JSON bodies on a Unix socket, in the
//! style of Cloud Hypervisor's API socket.
//!
//! - [`types`]: request and response bodies.
//! - [`routes`]: the endpoints, and [`Route::resolve`] to dispatch a request
//!   (404 unknown path, 405 wrong method).
//! - [`Server`]: serves a socket by calling a handler `Fn(Request) -> Response`.
//! - [`Client`]: talks to a server (used by `ferry ctl` and `ferry migrate`).
//!
//! Errors are JSON `{"error": "..."}` ([`types::ErrorBody`]) with an HTTP
//! error status. Migration progress and reports are `serde_json::Value`s
//! whose shape the `migrate` crate defines.

mod client;
pub mod routes;
mod server;
pub mod types;

pub use client::{Client, ClientError, DEFAULT_TIMEOUT};
pub use routes::Route;
pub use server::{MAX_REQUEST_BODY, Method, Request, Response, Server, ServerError};
