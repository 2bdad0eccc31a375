//! A Ferry cluster on one machine (`ferry cluster up`, docs/CLUSTER.md):
//! each host is a network namespace joined to a bridge by a veth pair whose
//! two ends are capped by `tc` at the link rate, running its own
//! `ferry agent`; the process that calls [`Cluster::up`] serves the
//! embedded store on a Unix socket every namespace reaches, runs one
//! `ferry manager`, records a [`Timeline`] while the cluster runs, and
//! takes everything down again (manager, agents, VMs, host cgroups,
//! namespaces, veths, bridge) when it stops.
//!
//! Inside: [`config`] (what to start, checked before anything is made) ->
//! [`net`] (namespaces, bridge, links) and [`procs`] (the processes on
//! them) -> [`observe`] (the cluster as the store and the decision log
//! show it, also for `ferry cluster status`) -> [`timeline`] (samples,
//! orders, JSON and SVG).

pub mod cluster;
pub mod config;
pub mod net;
pub mod observe;
pub mod procs;
pub mod timeline;

pub use cluster::Cluster;
pub use config::ClusterConfig;
pub use observe::{Observed, status_text};
pub use timeline::Timeline;
