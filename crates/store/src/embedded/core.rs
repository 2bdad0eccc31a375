//! The embedded store's state and its rules, with etcd's semantics: one
//! revision per change, create/mod revisions and versions per key, leases
//! whose expiry deletes their keys, and a bounded history for watches.
//! Time is passed in, so the rules are tested without waiting.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use crate::error::{Result, StoreError};
use crate::types::{
    Compare, Event, EventKind, KeyValue, Lease, LeaseId, Listing, Op, Revision, Txn, TxnOutcome,
};

/// How many events the history keeps for watches that resume.
pub(crate) const HISTORY_LIMIT: usize = 10_000;

struct LeaseEntry {
    ttl: Duration,
    expires: Instant,
    keys: BTreeSet<String>,
}

pub(crate) struct Core {
    /// The current revision; a new store is at 1, as etcd is.
    revision: Revision,
    kvs: BTreeMap<String, KeyValue>,
    leases: HashMap<i64, LeaseEntry>,
    next_lease: i64,
    history: VecDeque<Event>,
    history_limit: usize,
    /// The oldest revision whose events are all still in `history`.
    oldest: Revision,
}

impl Core {
    pub(crate) fn new(history_limit: usize) -> Core {
        // Lease ids start at a random point, so a client that outlived a
        // previous store never renews someone else's lease by accident.
        let seed = RandomState::new().hash_one(std::process::id()) as i64;
        Core {
            revision: 1,
            kvs: BTreeMap::new(),
            leases: HashMap::new(),
            next_lease: (seed & 0x3fff_ffff_ffff_ffff).max(1),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            oldest: 1,
        }
    }

    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    pub(crate) fn range(&self, key: &str, prefix: bool) -> Listing {
        let kvs = if prefix {
            self.kvs
                .range(key.to_owned()..)
                .take_while(|(k, _)| k.starts_with(key))
                .map(|(_, kv)| kv.clone())
                .collect()
        } else {
            self.kvs.get(key).cloned().into_iter().collect()
        };
        Listing {
            kvs,
            revision: self.revision,
        }
    }

    pub(crate) fn txn(&mut self, txn: &Txn) -> Result<TxnOutcome> {
        check_overlaps(&txn.then)?;
        let holds = txn.when.iter().all(|c| match c {
            Compare::ModRevision { key, revision } => {
                self.kvs.get(key).map_or(0, |kv| kv.mod_revision) == *revision
            }
            Compare::CreateRevision { key, revision } => {
                self.kvs.get(key).map_or(0, |kv| kv.create_revision) == *revision
            }
        });
        if !holds {
            return Ok(TxnOutcome {
                succeeded: false,
                revision: self.revision,
                deleted: 0,
            });
        }
        for op in &txn.then {
            if let Op::Put { lease: Some(l), .. } = op
                && !self.leases.contains_key(&l.0)
            {
                return Err(StoreError::LeaseNotFound(*l));
            }
        }
        let rev = self.revision + 1;
        let mut events = Vec::new();
        for op in &txn.then {
            match op {
                Op::Put { key, value, lease } => events.push(self.put(key, value, *lease, rev)),
                Op::Delete { key } => events.extend(self.remove(key, rev)),
                Op::DeletePrefix { prefix } => {
                    let keys: Vec<String> = self
                        .range(prefix, true)
                        .kvs
                        .into_iter()
                        .map(|kv| kv.key)
                        .collect();
                    for key in keys {
                        events.extend(self.remove(&key, rev));
                    }
                }
            }
        }
        let deleted = events
            .iter()
            .filter(|e| e.kind == EventKind::Delete)
            .count() as i64;
        self.commit(events);
        Ok(TxnOutcome {
            succeeded: true,
            revision: self.revision,
            deleted,
        })
    }

    fn put(&mut self, key: &str, value: &[u8], lease: Option<LeaseId>, rev: Revision) -> Event {
        let old = self.kvs.get(key);
        let (create_revision, version) =
            old.map_or((rev, 1), |kv| (kv.create_revision, kv.version + 1));
        if let Some(old_lease) = old.and_then(|kv| kv.lease) {
            self.detach(old_lease, key);
        }
        if let Some(l) = lease
            && let Some(entry) = self.leases.get_mut(&l.0)
        {
            entry.keys.insert(key.to_owned());
        }
        let kv = KeyValue {
            key: key.to_owned(),
            value: value.to_vec(),
            create_revision,
            mod_revision: rev,
            version,
            lease,
        };
        self.kvs.insert(key.to_owned(), kv.clone());
        Event {
            kind: EventKind::Put,
            kv,
        }
    }

    fn remove(&mut self, key: &str, rev: Revision) -> Option<Event> {
        let old = self.kvs.remove(key)?;
        if let Some(l) = old.lease {
            self.detach(l, key);
        }
        Some(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: old.key,
                value: Vec::new(),
                create_revision: 0,
                mod_revision: rev,
                version: 0,
                lease: None,
            },
        })
    }

    fn detach(&mut self, lease: LeaseId, key: &str) {
        if let Some(entry) = self.leases.get_mut(&lease.0) {
            entry.keys.remove(key);
        }
    }

    /// Moves to the next revision if `events` changed anything, and records them.
    fn commit(&mut self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        self.revision += 1;
        self.history.extend(events);
        while self.history.len() > self.history_limit {
            // Whole revisions leave the history, never part of one.
            let gone = self.history.front().map_or(0, Event::revision);
            while self.history.front().is_some_and(|e| e.revision() == gone) {
                self.history.pop_front();
            }
            self.oldest = gone + 1;
        }
    }

    /// Events under `prefix` with a revision of `from` or later.
    pub(crate) fn events_since(&self, prefix: &str, from: Revision) -> Result<Vec<Event>> {
        if from < self.oldest {
            return Err(StoreError::Compacted {
                requested: from,
                compacted: self.oldest,
            });
        }
        // History is in revision order: skip what is older than `from`.
        let start = self.history.partition_point(|e| e.revision() < from);
        Ok(self
            .history
            .range(start..)
            .filter(|e| e.kv.key.starts_with(prefix))
            .cloned()
            .collect())
    }

    pub(crate) fn grant(&mut self, ttl_secs: i64, now: Instant) -> Result<Lease> {
        let ttl = u64::try_from(ttl_secs)
            .ok()
            .filter(|&s| s > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| StoreError::InvalidConfig(format!("lease TTL {ttl_secs} s")))?;
        let id = self.next_lease;
        self.next_lease = self.next_lease.wrapping_add(1).max(1);
        self.leases.insert(
            id,
            LeaseEntry {
                ttl,
                expires: now + ttl,
                keys: BTreeSet::new(),
            },
        );
        Ok(Lease {
            id: LeaseId(id),
            ttl,
        })
    }

    pub(crate) fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<()> {
        let entry = self
            .leases
            .get_mut(&id.0)
            .ok_or(StoreError::LeaseNotFound(id))?;
        entry.expires = now + entry.ttl;
        Ok(())
    }

    pub(crate) fn revoke(&mut self, id: LeaseId) -> Result<()> {
        let entry = self
            .leases
            .remove(&id.0)
            .ok_or(StoreError::LeaseNotFound(id))?;
        let rev = self.revision + 1;
        let mut events = Vec::new();
        for key in entry.keys {
            if let Some(old) = self.kvs.remove(&key) {
                events.push(Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: old.key,
                        value: Vec::new(),
                        create_revision: 0,
                        mod_revision: rev,
                        version: 0,
                        lease: None,
                    },
                });
            }
        }
        self.commit(events);
        Ok(())
    }

    pub(crate) fn time_to_live(&self, id: LeaseId, now: Instant) -> Option<Duration> {
        self.leases
            .get(&id.0)
            .map(|e| e.expires.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Revokes every lease whose time is up (each at its own revision);
    /// true if any was.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        let mut due: Vec<(Instant, i64)> = self
            .leases
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(id, e)| (e.expires, *id))
            .collect();
        due.sort();
        for (_, id) in &due {
            let _ = self.revoke(LeaseId(*id));
        }
        !due.is_empty()
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;

/// etcd refuses a transaction that writes one key twice; so does this store.
fn check_overlaps(ops: &[Op]) -> Result<()> {
    let mut keys = BTreeSet::new();
    let mut prefixes = Vec::new();
    for op in ops {
        match op {
            Op::Put { key, .. } | Op::Delete { key } => {
                if !keys.insert(key.as_str()) {
                    return Err(duplicate(key));
                }
            }
            Op::DeletePrefix { prefix } => prefixes.push(prefix.as_str()),
        }
    }
    for op in ops {
        if let Op::Put { key, .. } = op
            && prefixes.iter().any(|p| key.starts_with(p))
        {
            return Err(duplicate(key));
        }
    }
    Ok(())
}

fn duplicate(key: &str) -> StoreError {
    StoreError::Rejected {
        op: "txn",
        reason: format!("key {key:?} is written twice in one transaction"),
    }
}
