//! From etcd-client's types to the store's.

use std::time::Duration;

use etcd_client::Error;
use tonic::Code;

use crate::error::StoreError;
use crate::types::{KeyValue, LeaseId};

pub(super) fn key_value(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    let key = kv.key_str().map_err(|_| {
        StoreError::Protocol(format!(
            "etcd holds a key that is not UTF-8: {:?}",
            kv.key()
        ))
    })?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(LeaseId(kv.lease())),
    })
}

/// Sorts etcd-client's errors into the store's: unreachable, timed out,
/// lease gone, or refused.
pub(super) fn map_error(
    op: &'static str,
    e: Error,
    lease: Option<LeaseId>,
    deadline: Duration,
) -> StoreError {
    let lease_gone = || StoreError::LeaseNotFound(lease.unwrap_or(LeaseId(0)));
    match e {
        Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable | Code::Cancelled | Code::Unknown => StoreError::Unavailable {
                op,
                reason: transport_reason(&status),
            },
            Code::DeadlineExceeded => StoreError::Timeout {
                op,
                after: deadline,
            },
            Code::NotFound if status.message().contains("lease not found") => lease_gone(),
            _ => StoreError::Rejected {
                op,
                reason: format!("{:?}: {}", status.code(), status.message()),
            },
        },
        Error::LeaseKeepAliveError(m) if m.contains("lease not found") => lease_gone(),
        Error::TransportError(e) => StoreError::Unavailable {
            op,
            reason: transport_reason(&e),
        },
        Error::IoError(e) => StoreError::Unavailable {
            op,
            reason: e.to_string(),
        },
        Error::WatchError(m) | Error::LeaseKeepAliveError(m) => {
            StoreError::Unavailable { op, reason: m }
        }
        Error::InvalidArgs(m) | Error::EndpointError(m) => StoreError::InvalidConfig(m),
        Error::InvalidUri(e) => StoreError::InvalidConfig(e.to_string()),
        other => StoreError::Rejected {
            op,
            reason: other.to_string(),
        },
    }
}

/// The error with its causes, which say why (refused, TLS), each once.
fn transport_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![match e.downcast_ref::<tonic::Status>() {
        Some(status) => status.message().to_owned(),
        None => e.to_string(),
    }];
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if parts.last() != Some(&part) {
            parts.push(part);
        }
        source = s.source();
    }
    parts.join(": ")
}
