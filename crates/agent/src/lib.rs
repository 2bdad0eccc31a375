//! A Ferry host agent, one per host: it owns the host's VMs as one
//! `ferry run` process each, keeps them in the host's cgroup (CPU quota =
//! the declared capacity), measures the host and every VM at an interval,
//! publishes a [`HostReport`] to the store under a lease and serves the
//! same figures as Prometheus text on `/metrics` (docs/CLUSTER.md).
//!
//! VMs outlive their agent: a VM process is started in a process group of
//! its own, so signals to the agent never reach it, and leaves its API
//! socket in the agent's state directory; a restarted agent adopts every VM
//! whose socket answers there.
//!
//! Inside: [`agent`] (the loop) -> [`execute`] (carrying out migration
//! [`order`]s as source or destination), [`vms`] (start, adopt, ask,
//! receive) and [`sample`] (CPU, memory, guest counters over an interval)
//! and [`power`] (switched off and on by the manager) -> [`report`] (what is
//! published) -> [`metrics`] (the Prometheus
//! registry and its HTTP endpoint).

pub mod agent;
pub mod config;
pub mod execute;
mod https;
pub mod metrics;
pub mod order;
pub mod power;
pub mod report;
pub mod sample;
pub mod vms;

pub use agent::Agent;
pub use config::{AgentConfig, VmSpec};
pub use order::{Order, OrderMigration, OrderView, Side, SideReport, Stage, Verdict};
pub use power::{Power, PowerOrder, power_key};
pub use report::{HostReport, VmReport, host_key};
pub use sample::unix_ms;
