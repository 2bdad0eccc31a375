//! What an agent publishes each interval: its host's load against its
//! capacity, and each VM's, under `/ferry/hosts/HOST` with the agent's
//! lease (the key goes when the agent has been gone for a TTL).

use api::types::GuestCounters;
use serde::{Deserialize, Serialize};

/// The prefix of every host report key.
pub const HOSTS_PREFIX: &str = "/ferry/hosts/";

/// The store key of `host`'s report.
pub fn host_key(host: &str) -> String {
    format!("{HOSTS_PREFIX}{host}")
}

/// One host, one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    pub host: String,
    /// When it was measured (UNIX ms, the agent's clock).
    pub unix_ms: u64,
    /// The interval it covers, in ms.
    pub interval_ms: u64,
    /// Declared capacity in CPUs (the cgroup's quota).
    pub capacity_cpus: f64,
    /// CPU time the host's cgroup used so far, in seconds.
    pub cpu_seconds: f64,
    /// CPUs' worth used over the interval; None on the first one.
    pub load_cpus: Option<f64>,
    /// Quota periods in which the host was throttled, so far.
    pub throttled_periods: u64,
    /// Declared memory for VMs, bytes (None from agents that do not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// The host is switched off (crate::power): it holds no VM and
    /// accepts none until switched on.
    #[serde(default)]
    pub switched_off: bool,
    pub vms: Vec<VmReport>,
}

/// One VM, one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmReport {
    pub name: String,
    pub pid: u32,
    /// Its lifecycle state as its API says (`api::types::vm_state`).
    pub state: String,
    pub vcpus: u32,
    /// Guest RAM.
    pub memory_bytes: u64,
    /// What the VM's process holds in RAM.
    pub resident_bytes: u64,
    /// CPU time of its vCPU threads so far, in seconds.
    pub cpu_seconds: f64,
    /// CPUs' worth its vCPUs used over the interval; None on the first one.
    pub load_cpus: Option<f64>,
    /// The guest's own counters, if it publishes them.
    pub guest: Option<GuestCounters>,
    /// The dirty rate the running migration measures, bytes/s.
    pub dirty_rate_bytes_per_second: Option<u64>,
}
