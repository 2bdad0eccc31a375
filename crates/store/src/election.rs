//! Leader election over the store's keys, leases and watches, with etcd's
//! algorithm (its `concurrency.Election`): each candidate puts
//! `NAME/LEASE` attached to its lease; the candidate whose key has the
//! lowest create revision leads. It leads until it resigns or its lease
//! lapses (its process died, or could not reach the store for a TTL);
//! then the next candidate leads. Both backends share this code.
//!
//! Two leaders never act at once if the leader fences its writes: a
//! leader that was paused past its TTL may still believe it leads, so
//! every write it makes as leader goes through [`Leadership::txn`], which
//! applies only while its key is the one it created.

use std::time::{Duration, Instant};

use crate::error::{Result, StoreError};
use crate::store::Store;
use crate::types::{Compare, EventKind, KeyValue, LeaseId, Op, Revision, Txn, TxnOutcome};
use crate::watch::Watch;

/// One election, named by a key prefix (e.g. `/ferry/manager/leader`).
#[derive(Clone)]
pub struct Election {
    store: Store,
    name: String,
}

/// Being the leader: proof that can be checked and that fences writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    key: String,
    create_revision: Revision,
    lease: LeaseId,
}

impl Election {
    pub fn new(store: Store, name: &str) -> Result<Election> {
        if name.is_empty() || name.ends_with('/') {
            return Err(StoreError::InvalidKey(name.into()));
        }
        Ok(Election {
            store,
            name: name.to_owned(),
        })
    }

    fn prefix(&self) -> String {
        format!("{}/", self.name)
    }

    fn candidate_key(&self, lease: LeaseId) -> String {
        format!("{}/{:016x}", self.name, lease.0)
    }

    /// Stands as a candidate with `value` (who it is, how to reach it) for
    /// as long as `lease` lives, and waits up to `wait` to lead. Returns
    /// None if another still leads then; the candidacy stays in line (call
    /// again with the same lease to keep waiting, or [`Election::withdraw`]).
    pub fn campaign(
        &self,
        lease: LeaseId,
        value: &[u8],
        wait: Duration,
    ) -> Result<Option<Leadership>> {
        let until = Instant::now() + wait;
        let key = self.candidate_key(lease);
        let mine = self.stand(&key, lease, value)?;
        let prefix = self.prefix();
        loop {
            let listing = self.store.list(&prefix)?;
            match listing.kvs.iter().find(|kv| kv.key == key) {
                Some(kv) if kv.create_revision == mine => {}
                // The lease lapsed while waiting: the candidacy is gone.
                _ => return Err(StoreError::LeaseNotFound(lease)),
            }
            if listing.kvs.iter().all(|kv| kv.create_revision >= mine) {
                return Ok(Some(Leadership {
                    key,
                    create_revision: mine,
                    lease,
                }));
            }
            let mut watch = self.store.watch(&prefix, Some(listing.revision + 1))?;
            if !wait_for_delete(&mut watch, until)? {
                return Ok(None);
            }
        }
    }

    /// Puts the candidacy if it is not there yet; returns its create revision.
    fn stand(&self, key: &str, lease: LeaseId, value: &[u8]) -> Result<Revision> {
        let create = Txn::new()
            .when(Compare::absent(key))
            .then(Op::put(key, value, Some(lease)));
        let out = self.store.txn(create)?;
        if out.succeeded {
            return Ok(out.revision);
        }
        let kv = self
            .store
            .get(key)?
            .ok_or(StoreError::LeaseNotFound(lease))?;
        if kv.value != value {
            // Same candidacy, new value: a put keeps the create revision.
            let update = Txn::new()
                .when(Compare::create_revision(key, kv.create_revision))
                .then(Op::put(key, value, Some(lease)));
            self.store.txn(update)?;
        }
        Ok(kv.create_revision)
    }

    /// Leaves the line (or the lead) for the candidacy of `lease`.
    pub fn withdraw(&self, lease: LeaseId) -> Result<()> {
        self.store.delete(&self.candidate_key(lease)).map(drop)
    }

    /// The current leader's key and value, if anyone leads.
    pub fn leader(&self) -> Result<Option<KeyValue>> {
        Ok(leader_of(self.store.list(&self.prefix())?.kvs))
    }

    /// Follows who leads, from now on.
    pub fn observe(&self) -> Result<Observer> {
        let listing = self.store.list(&self.prefix())?;
        let watch = self
            .store
            .watch(&self.prefix(), Some(listing.revision + 1))?;
        Ok(Observer {
            election: self.clone(),
            watch,
            current: leader_of(listing.kvs),
        })
    }
}

/// Waits until a key under the watched prefix is deleted (true) or `until`
/// passes (false).
fn wait_for_delete(watch: &mut Watch, until: Instant) -> Result<bool> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        if let Some(e) = watch.next(left)?
            && e.kind == EventKind::Delete
        {
            return Ok(true);
        }
    }
}

fn leader_of(kvs: Vec<KeyValue>) -> Option<KeyValue> {
    kvs.into_iter().min_by_key(|kv| kv.create_revision)
}

impl Leadership {
    /// The leader's key in the store.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// Holds while this leadership lasts: add it to every write made as
    /// leader.
    pub fn fence(&self) -> Compare {
        Compare::create_revision(&self.key, self.create_revision)
    }

    /// Applies `txn` only while this leadership lasts; `succeeded` is false
    /// if it ended (or another comparison failed).
    pub fn txn(&self, store: &Store, txn: Txn) -> Result<TxnOutcome> {
        store.txn(txn.when(self.fence()))
    }

    /// Whether the store still has this leadership (it may end the next
    /// moment: fence writes rather than check first).
    pub fn is_current(&self, store: &Store) -> Result<bool> {
        Ok(store
            .get(&self.key)?
            .is_some_and(|kv| kv.create_revision == self.create_revision))
    }

    /// Stands down: the next candidate leads.
    pub fn resign(self, store: &Store) -> Result<()> {
        store
            .txn(Txn::new().when(self.fence()).then(Op::delete(&self.key)))
            .map(drop)
    }
}

/// Who leads an election, kept up to date by a watch.
pub struct Observer {
    election: Election,
    watch: Watch,
    current: Option<KeyValue>,
}

impl Observer {
    /// The leader as last seen.
    pub fn current(&self) -> Option<&KeyValue> {
        self.current.as_ref()
    }

    /// Waits up to `wait` for the leadership to change; true if it did
    /// (see [`Observer::current`]). After an error, observe again.
    pub fn changed(&mut self, wait: Duration) -> Result<bool> {
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if self.watch.next(left)?.is_none() {
                return Ok(false);
            }
            let now = self.election.leader()?;
            let same = |a: &KeyValue, b: &KeyValue| {
                (&a.key, a.create_revision, &a.value) == (&b.key, b.create_revision, &b.value)
            };
            let changed = match (&self.current, &now) {
                (Some(a), Some(b)) => !same(a, b),
                (None, None) => false,
                _ => true,
            };
            self.current = now;
            if changed {
                return Ok(true);
            }
        }
    }
}
