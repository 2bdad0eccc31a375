//! The store's data: keys with revisions, leases, transactions and watch
//! events. The same types travel over the embedded store's socket.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in the store's history. Every change (one put, one delete, one
/// transaction, one lease expiry) moves the whole store to the next
/// revision; reads report the revision they saw. Revision 0 means "never".
pub type Revision = i64;

/// A lease: keys attached to it vanish when it expires or is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaseId(pub i64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A lease as granted: the store may round the asked TTL up (etcd grants
/// whole seconds and has a minimum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: LeaseId,
    pub ttl: Duration,
}

/// One key as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision that created the key (since its last deletion).
    pub create_revision: Revision,
    /// The revision of its last change; for a delete event, the deletion's.
    pub mod_revision: Revision,
    /// How many times it was written since it was created (1 after the first put).
    pub version: i64,
    /// The lease it is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// What a read saw: the keys, and the store's revision at that moment (watch
/// from `revision + 1` to miss nothing that happened after the read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
}

/// A condition of a transaction: a key's revision equals a value, 0 meaning
/// the key does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    /// The key's last change was at this revision.
    ModRevision { key: String, revision: Revision },
    /// The key was created at this revision (it was not deleted and put
    /// again since): how a leader fences its writes.
    CreateRevision { key: String, revision: Revision },
}

impl Compare {
    /// The key does not exist.
    pub fn absent(key: impl Into<String>) -> Compare {
        Compare::CreateRevision {
            key: key.into(),
            revision: 0,
        }
    }

    pub fn mod_revision(key: impl Into<String>, revision: Revision) -> Compare {
        Compare::ModRevision {
            key: key.into(),
            revision,
        }
    }

    pub fn create_revision(key: impl Into<String>, revision: Revision) -> Compare {
        Compare::CreateRevision {
            key: key.into(),
            revision,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Compare::ModRevision { key, .. } | Compare::CreateRevision { key, .. } => key,
        }
    }
}

/// A change a transaction makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    /// Every key that starts with `prefix`.
    DeletePrefix {
        prefix: String,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>, lease: Option<LeaseId>) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease,
        }
    }

    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete { key: key.into() }
    }

    pub fn delete_prefix(prefix: impl Into<String>) -> Op {
        Op::DeletePrefix {
            prefix: prefix.into(),
        }
    }
}

/// If every comparison holds, apply every op, atomically, at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub when: Vec<Compare>,
    pub then: Vec<Op>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }

    pub fn when(mut self, compare: Compare) -> Txn {
        self.when.push(compare);
        self
    }

    pub fn then(mut self, op: Op) -> Txn {
        self.then.push(op);
        self
    }
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOutcome {
    /// Every comparison held and the ops were applied.
    pub succeeded: bool,
    /// The store's revision after the transaction (the ops' revision if they
    /// changed anything).
    pub revision: Revision,
    /// How many keys the ops deleted.
    pub deleted: i64,
}

/// The result of a compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    /// Written at this revision.
    Done(Revision),
    /// The key had changed since the expected revision: nothing written;
    /// read it again and decide again.
    Conflict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch. For a delete, `kv` has the key and the
/// deletion's revision (`mod_revision`), and no value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}
