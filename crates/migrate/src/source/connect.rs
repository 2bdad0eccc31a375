//! Reaching the destination: resolve, then try each address in turn.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::error::MigrateError;

/// Connects to `to` ("host:port"), allowing `timeout` per address.
pub(super) fn connect(to: &str, timeout: Duration) -> Result<TcpStream, MigrateError> {
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
