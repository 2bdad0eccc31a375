//! [`Store`]: the one interface callers use, whichever backend serves it.

use std::sync::Arc;
use std::time::Duration;

use crate::config::StoreConfig;
use crate::error::{Result, StoreError};
use crate::types::{KeyValue, Lease, LeaseId, Listing, Op, Revision, Swap, Txn, TxnOutcome};
use crate::watch::{Watch, WatchStream};

/// What a backend does; [`Store`] adds the conveniences and the checks.
/// Every method returns within the backend's deadline.
pub(crate) trait Backend: Send + Sync {
    /// One key (`prefix` false) or every key starting with `key`.
    fn range(&self, key: &str, prefix: bool) -> Result<Listing>;
    fn txn(&self, txn: &Txn) -> Result<TxnOutcome>;
    /// Events under `prefix` from revision `from` (None: after the current
    /// revision); returns the stream and the first revision it may deliver.
    fn watch(
        &self,
        prefix: &str,
        from: Option<Revision>,
    ) -> Result<(Box<dyn WatchStream>, Revision)>;
    fn grant(&self, ttl_secs: i64) -> Result<Lease>;
    fn keep_alive(&self, id: LeaseId) -> Result<()>;
    fn revoke(&self, id: LeaseId) -> Result<()>;
    /// The time the lease has left, or None if it is gone.
    fn time_to_live(&self, id: LeaseId) -> Result<Option<Duration>>;
    fn deadline(&self) -> Duration;
}

/// A handle on the cluster's state store: etcd v3 or the embedded store,
/// with the same semantics. Calls block (each within the configured
/// deadline); clones share one connection and may be used from any thread,
/// but not from inside an async runtime.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl Store {
    /// Connects to the configured store. For etcd this checks the
    /// configuration and answers at once; the first call finds out whether
    /// etcd is up.
    pub fn connect(config: &StoreConfig) -> Result<Store> {
        let backend: Arc<dyn Backend> = match config {
            StoreConfig::Etcd(c) => Arc::new(crate::etcd::EtcdBackend::connect(c)?),
            StoreConfig::Embedded { socket, deadline } => Arc::new(
                crate::embedded::client::EmbeddedClient::new(socket.clone(), *deadline)?,
            ),
        };
        Ok(Store { backend })
    }

    /// How long each call may take.
    pub fn deadline(&self) -> Duration {
        self.backend.deadline()
    }

    pub fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        check_key(key)?;
        Ok(self.backend.range(key, false)?.kvs.into_iter().next())
    }

    /// Every key starting with `prefix` (all keys if empty), in key order,
    /// with the revision the read saw.
    pub fn list(&self, prefix: &str) -> Result<Listing> {
        self.backend.range(prefix, true)
    }

    /// Writes `key`; attached to `lease` if given (the lease must exist).
    /// Returns the write's revision.
    pub fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> Result<Revision> {
        check_key(key)?;
        Ok(self
            .txn(Txn::new().then(Op::put(key, value, lease)))?
            .revision)
    }

    /// Deletes `key`; true if it existed.
    pub fn delete(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        Ok(self.txn(Txn::new().then(Op::delete(key)))?.deleted > 0)
    }

    /// Deletes every key starting with `prefix` (not empty); returns how many.
    pub fn delete_prefix(&self, prefix: &str) -> Result<i64> {
        check_key(prefix)?;
        Ok(self
            .txn(Txn::new().then(Op::delete_prefix(prefix)))?
            .deleted)
    }

    /// Applies `txn` atomically if all its comparisons hold.
    pub fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        for c in &txn.when {
            check_key(c.key())?;
        }
        for op in &txn.then {
            match op {
                Op::Put { key, .. } | Op::Delete { key } | Op::DeletePrefix { prefix: key } => {
                    check_key(key)?
                }
            }
        }
        self.backend.txn(&txn)
    }

    /// Writes `key` only if its last change is still at `expected`
    /// (`mod_revision` of the value read; 0: only if the key is absent).
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Revision,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<Swap> {
        let txn = Txn::new()
            .when(crate::Compare::mod_revision(key, expected))
            .then(Op::put(key, value, lease));
        let out = self.txn(txn)?;
        Ok(if out.succeeded {
            Swap::Done(out.revision)
        } else {
            Swap::Conflict
        })
    }

    /// Changes under `prefix` from revision `from` on (None: from now on).
    /// After an error, watch again from [`Watch::resume_from`] to miss
    /// nothing and see nothing twice.
    pub fn watch(&self, prefix: &str, from: Option<Revision>) -> Result<Watch> {
        if from.is_some_and(|r| r <= 0) {
            return Err(StoreError::InvalidConfig(format!(
                "watch from revision {}: revisions start at 1",
                from.unwrap_or_default()
            )));
        }
        let (stream, first) = self.backend.watch(prefix, from)?;
        Ok(Watch::new(stream, first))
    }

    /// A new lease of at least `ttl` (rounded up to whole seconds).
    pub fn grant_lease(&self, ttl: Duration) -> Result<Lease> {
        if ttl.is_zero() {
            return Err(StoreError::InvalidConfig("a lease of zero seconds".into()));
        }
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let secs = i64::try_from(secs)
            .map_err(|_| StoreError::InvalidConfig(format!("lease TTL {ttl:?}")))?;
        self.backend.grant(secs)
    }

    /// Renews the lease to its full TTL; [`StoreError::LeaseNotFound`] once
    /// it has expired.
    pub fn keep_alive(&self, id: LeaseId) -> Result<()> {
        self.backend.keep_alive(id)
    }

    /// Ends the lease now; its keys are deleted.
    pub fn revoke_lease(&self, id: LeaseId) -> Result<()> {
        self.backend.revoke(id)
    }

    /// How long the lease has left without a keep-alive; None once gone.
    pub fn lease_ttl(&self, id: LeaseId) -> Result<Option<Duration>> {
        self.backend.time_to_live(id)
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey(key.into()));
    }
    Ok(())
}
