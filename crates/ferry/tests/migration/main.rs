//! Safety of live migration, end to end with real `ferry` processes, KVM and
//! TCP: every failure before Commit, injected at several points of a
//! migration, leaves exactly one copy of the VM running (on the source) with
//! its integrity check passing, and a retry then succeeds. docs/SAFETY.md
//! has the matrix of failures, points and tests.

mod bench;
mod commit;
mod control;
mod downtime;
mod happy;
mod harness;
mod hostile;
mod interrupted;
mod points;
mod postcopy;
mod refused;
mod strategies;
mod tls;
mod txn;
