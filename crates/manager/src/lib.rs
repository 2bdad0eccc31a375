//! The live migration manager (`ferry manager`): one leader at a time,
//! elected on the store, looks at the pool every interval, decides with
//! `cluster::Manager` (the engine the simulator runs) and issues migration
//! orders that the agents carry out, then watches them to their end and
//! logs every decision with its reason (docs/CLUSTER.md, "The manager").
//!
//! Inside: [`leader`] (election, the interval, orders) -> [`view`] (the
//! agents' reports into a `cluster::PoolView`, bad reports left out) and
//! [`log`] (the decision log), `power` (hosts switched off and on) and `orders` (lost
//! hosts' orders abandoned, old orders removed);
//! [`config`] is what the binary fills in.

pub mod config;
pub mod leader;
pub mod log;
mod orders;
mod power;
pub mod view;

pub use config::ManagerConfig;
pub use leader::LiveManager;
pub use view::{Monitor, Pool, ViewSettings, vm_id};
