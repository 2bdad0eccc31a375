//! Errors of the migration protocol.

use std::io;
use std::path::PathBuf;

use thiserror::Error;
use vmstate::{DecodeError, EncodeError};

use crate::abort::AbortCode;

/// Everything that can go wrong on a migration connection. Display gives
/// one line naming the problem.
#[derive(Debug, Error)]
pub enum WireError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Encode(#[from] EncodeError),
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the connection{while_}", while_ = while_suffix(.during))]
    Closed { during: &'static str },
    #[error("message {kind}: malformed: {what}")]
    Malformed { kind: &'static str, what: String },
    #[error("protocol error: got {got} while expecting {expected}")]
    Unexpected {
        got: &'static str,
        expected: &'static str,
    },
    #[error("the peer is not a Ferry migration endpoint (bad magic in Hello)")]
    NotFerry,
    #[error(
        "protocol version mismatch: the destination speaks versions {dest_min}..={dest_max}, the source offers {source_min}..={source_max}"
    )]
    VersionMismatch {
        source_min: u16,
        source_max: u16,
        dest_min: u16,
        dest_max: u16,
    },
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    #[error("the peer aborted the migration ({code}): {message}")]
    PeerAborted { code: AbortCode, message: String },
    #[error("cannot read the migration secret from {}: {source}", path.display())]
    SecretFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the migration secret in {} is {len} bytes; at least {min} are required", path.display())]
    SecretTooShort {
        path: PathBuf,
        len: usize,
        min: usize,
    },
}

fn while_suffix(during: &str) -> String {
    if during.is_empty() {
        String::new()
    } else {
        format!(" while {during}")
    }
}

impl WireError {
    /// Whether the error is a socket timeout (a stalled peer).
    pub fn is_timeout(&self) -> bool {
        let io = match self {
            WireError::Io(e) => Some(e),
            WireError::Encode(EncodeError::Io(e)) => Some(e),
            WireError::Decode(DecodeError::Io { source, .. }) => Some(source),
            _ => None,
        };
        io.is_some_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            )
        })
    }

    /// Whether the error means the stream carried bytes that are not a valid
    /// frame or message (corruption, garbage, a non-Ferry peer).
    pub fn is_corrupt(&self) -> bool {
        match self {
            WireError::Decode(DecodeError::Io { .. }) => false,
            WireError::Decode(DecodeError::Truncated { .. }) => false,
            WireError::Decode(_) => true,
            WireError::Malformed { .. } | WireError::NotFerry => true,
            _ => false,
        }
    }
}
