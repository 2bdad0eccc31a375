//! The live cluster on real processes: `ferry agent` (its VMs, metrics,
//! reports, adoption, migration orders), `ferry manager` on a real etcd
//! (election, orders, takeover), and both together relieving a hotspot
//! with no command typed.

mod agent;
mod harness;
mod live;
mod manager;
mod up;
