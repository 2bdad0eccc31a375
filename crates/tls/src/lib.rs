//! Mutual TLS for every connection between Ferry hosts.
//!
//! A cluster has one certificate authority; each host holds the CA's
//! certificate and its own certificate and key, signed by that CA, in one
//! directory ([`pki::init`] creates them all; [`Credentials::load`] reads
//! one host's). Both ends of every connection present a certificate and
//! both require the peer's to chain to the cluster CA and be valid now:
//! a peer is trusted for being a member of the cluster (host names are not
//! checked; docs/SECURITY.md). TLS 1.3 only, with the `ring` provider.
//!
//! [`Conn`] is the stream the rest of Ferry uses: plain TCP for single-host
//! use, or TLS, with the same clone, timeout and shutdown behaviour as a
//! `TcpStream` so that a reader thread and a writer can share one connection.

mod conn;
mod creds;
mod error;
pub mod pki;
mod verify;

pub use conn::Conn;
pub use creds::Credentials;
pub use error::TlsError;
pub use rustls::ServerConfig;
