//! What a Ferry agent measures on its host, with no KVM involved:
//!
//! - [`HostCgroup`]: the host's share of the machine, a cgroup whose CPU
//!   quota is the host's declared capacity (several hosts share one
//!   machine in tests and demos, so each must have a real capacity of its
//!   own), holding the host's VM processes; its accounting gives the
//!   host's load ([`CpuSample`], [`CpuLoad`]).
//! - [`threads`], [`vcpu_threads`], [`process_cpu`]: per-VM CPU from
//!   /proc, a VM being one process and its vCPUs named threads.
//!
//! cgroup v2 (`cpu.max`, `cpu.stat`) is used where its hierarchy has the
//! cpu controller, v1 (`cpu.cfs_quota_us`, `cpuacct.usage`) otherwise:
//! [`CpuHierarchy::detect`] decides at run time (docs/CLUSTER.md says why).

mod cgroup;
mod hierarchy;
mod load;
mod memory;
mod proc;

use std::path::PathBuf;

pub use cgroup::{CpuStat, HostCgroup};
pub use hierarchy::{CgroupVersion, CpuHierarchy};
pub use load::{CpuLoad, CpuSample};
pub use memory::mem_total;
pub use proc::{ThreadCpu, VCPU_THREAD_PREFIX, process_cpu, threads, vcpu_threads};

#[derive(Debug, thiserror::Error)]
pub enum HostmonError {
    #[error(
        "no cgroup hierarchy has the cpu controller (need cgroup v2 with cpu, or v1 cpu and cpuacct)"
    )]
    NoCpuController,
    #[error("invalid host cgroup name {0:?} (letters, digits, '-', '_', '.'; at most 64)")]
    InvalidName(String),
    #[error("invalid CPU capacity {0} (a positive number of CPUs)")]
    InvalidCapacity(f64),
    #[error("no process {0}")]
    NoProcess(u32),
    #[error("cgroup {0} still has processes")]
    NotEmpty(PathBuf),
    #[error("cannot {action} {path}: {error}")]
    Io {
        action: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
}
