//! Reaching the destination: resolve, try each address in turn, then
//! mutual TLS when the host has credentials.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use tls::Conn;

use crate::error::MigrateError;

/// Connects to `to` ("host:port"), allowing `timeout` per address, and
/// with `tls` runs the TLS handshake (within `timeout` too).
pub(super) fn connect(
    to: &str,
    timeout: Duration,
    tls: Option<&tls::Credentials>,
) -> Result<Conn, MigrateError> {
    let tcp = connect_tcp(to, timeout)?;
    match tls {
        None => Ok(tcp.into()),
        Some(creds) => creds
            .connect(tcp, Instant::now() + timeout)
            .map_err(|source| MigrateError::Tls {
                addr: to.to_string(),
                source,
            }),
    }
}

fn connect_tcp(to: &str, timeout: Duration) -> Result<TcpStream, MigrateError> {
    let addrs: Vec<_> = to
        .to_socket_addrs()
        .map_err(|source| MigrateError::Resolve {
            addr: to.to_string(),
            source,
        })?
        .collect();
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            MigrateError::ConnectTimeout {
                addr: to.to_string(),
                timeout,
            }
        }
        Some(source) => MigrateError::Connect {
            addr: to.to_string(),
            source,
        },
        None => MigrateError::Resolve {
            addr: to.to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
        },
    })
}
