//! The cluster's state store: what agents publish, what the manager
//! orders, who is alive and who leads. One interface, [`Store`], over two
//! backends with the same semantics:
//!
//! - etcd v3 ([`StoreConfig::Etcd`]) for production, with mutual TLS;
//! - the embedded store ([`EmbeddedServer`], [`StoreConfig::Embedded`]),
//!   held in memory by one process and served to the others on a Unix
//!   socket: the default on one machine.
//!
//! What both give (docs/CLUSTER.md has the details):
//! - keys with revisions: every change moves the store to the next
//!   [`Revision`]; each [`KeyValue`] says when it was created and changed;
//! - transactions ([`Txn`]) that apply only if revisions compare equal,
//!   hence compare-and-swap ([`Store::compare_and_swap`]);
//! - watches on a prefix ([`Watch`]) that resume from a revision, so a
//!   reader that lists then watches misses nothing;
//! - leases ([`Lease`]) whose keys vanish when they expire, kept alive by
//!   [`LeaseKeeper`];
//! - leader election ([`Election`]) with fenced writes ([`Leadership`]).
//!
//! Calls block, each bounded by a deadline ([`DEFAULT_DEADLINE`]): a store
//! that is down yields [`StoreError::Timeout`] or
//! [`StoreError::Unavailable`], never a hang. The etcd client is async; a
//! small runtime inside this crate runs it, so callers (the manager's and
//! the agents' loops) stay plain threads.

mod config;
mod election;
mod embedded;
mod error;
mod etcd;
mod keeper;
mod store;
mod types;
mod watch;

pub use config::{DEFAULT_DEADLINE, EtcdConfig, StoreConfig, TlsFiles};
pub use election::{Election, Leadership, Observer};
pub use embedded::server::EmbeddedServer;
pub use error::{Result, StoreError};
pub use keeper::LeaseKeeper;
pub use store::Store;
pub use types::{
    Compare, Event, EventKind, KeyValue, Lease, LeaseId, Listing, Op, Revision, Swap, Txn,
    TxnOutcome,
};
pub use watch::Watch;
