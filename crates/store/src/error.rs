//! The store's errors: what went wrong, typed, so callers decide by variant
//! (retry later, re-list, give up) and never by message.

use std::path::PathBuf;
use std::time::Duration;

use crate::types::{LeaseId, Revision};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer within the call's deadline.
    #[error("store: {op} got no answer within {after:?}")]
    Timeout { op: &'static str, after: Duration },
    /// The store cannot be reached, or the connection broke.
    #[error("store: {op}: store unavailable: {reason}")]
    Unavailable { op: &'static str, reason: String },
    /// The lease does not exist: it expired or was revoked.
    #[error("store: lease {0} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    /// A watch asked for history the store no longer keeps: list again and
    /// watch from the listing's revision.
    #[error("store: revision {requested} was compacted (oldest kept: {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// Keys are non-empty text.
    #[error("store: invalid key {0:?}")]
    InvalidKey(String),
    /// The configuration cannot be used (endpoints, TLS, socket path).
    #[error("store: invalid configuration: {0}")]
    InvalidConfig(String),
    /// A certificate or key file cannot be read.
    #[error("store: cannot read {path}: {error}")]
    TlsFile {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The store refused the request for a reason of its own.
    #[error("store: {op} refused: {reason}")]
    Rejected { op: &'static str, reason: String },
    /// The embedded store's peer sent something outside its protocol.
    #[error("store: protocol error: {0}")]
    Protocol(String),
}

impl StoreError {
    /// The store could not be reached in time: the caller should retry
    /// later, and must not assume its write happened or did not.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Timeout { .. } | StoreError::Unavailable { .. }
        )
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;
