//! Measuring the host and its VMs over an interval: the host's load from
//! its cgroup's accounting, each VM's from its vCPU threads, memory from
//! /proc, guest counters and the dirty rate from the VM's API.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hostmon::{CpuSample, HostCgroup};

use crate::report::{HostReport, VmReport};
use crate::vms::VmProcess;

/// Keeps the previous samples, so each report carries the load since.
pub struct Sampler {
    host: String,
    capacity: f64,
    memory_bytes: u64,
    last_host: Option<CpuSample>,
    /// By VM name: the process sampled and its vCPU time then.
    last_vm: HashMap<String, (u32, CpuSample)>,
}

impl Sampler {
    pub fn new(host: &str, capacity: f64, memory_bytes: u64) -> Sampler {
        Sampler {
            host: host.to_string(),
            capacity,
            memory_bytes,
            last_host: None,
            last_vm: HashMap::new(),
        }
    }

    /// Measures now; the loads are over the time since the last call.
    pub fn sample(
        &mut self,
        cgroup: &HostCgroup,
        vms: &[VmProcess],
    ) -> Result<HostReport, hostmon::HostmonError> {
        let stat = cgroup.cpu_stat()?;
        let now = CpuSample {
            at: Instant::now(),
            usage: stat.usage,
        };
        let load = self
            .last_host
            .and_then(|l| now.load_since(&l, self.capacity));
        self.last_host = Some(now);
        let reports: Vec<VmReport> = vms.iter().filter_map(|vm| self.vm(vm)).collect();
        self.last_vm
            .retain(|name, _| reports.iter().any(|r| &r.name == name));
        Ok(HostReport {
            host: self.host.clone(),
            unix_ms: unix_ms(),
            interval_ms: load.map_or(0, |l| l.interval.as_millis() as u64),
            capacity_cpus: self.capacity,
            cpu_seconds: stat.usage.as_secs_f64(),
            load_cpus: load.map(|l| l.cpus),
            throttled_periods: stat.nr_throttled,
            memory_bytes: Some(self.memory_bytes),
            switched_off: false,
            vms: reports,
        })
    }

    /// One VM, or None if its process no longer answers.
    fn vm(&mut self, vm: &VmProcess) -> Option<VmReport> {
        let status = vm.status()?;
        let vcpu_time: Duration = hostmon::vcpu_threads(vm.pid)
            .ok()?
            .iter()
            .map(|t| t.cpu)
            .sum();
        let now = CpuSample {
            at: Instant::now(),
            usage: vcpu_time,
        };
        let load = match self.last_vm.get(&vm.name) {
            Some((pid, last)) if *pid == vm.pid => {
                now.load_since(last, f64::from(status.vcpus.max(1)))
            }
            _ => None,
        };
        self.last_vm.insert(vm.name.clone(), (vm.pid, now));
        let dirty = vm.migration(&status).map(|m| m.progress.dirty_rate_bps / 8);
        Some(VmReport {
            name: vm.name.clone(),
            pid: vm.pid,
            state: status.state,
            vcpus: status.vcpus,
            memory_bytes: status.memory_bytes,
            resident_bytes: resident_bytes(vm.pid).unwrap_or(0),
            cpu_seconds: vcpu_time.as_secs_f64(),
            load_cpus: load.map(|l| l.cpus),
            guest: status.guest,
            dirty_rate_bytes_per_second: dirty,
        })
    }
}

/// The process's resident memory (VmRSS of /proc/PID/status).
fn resident_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// The wall clock now, UNIX ms: the time every report, order and decision
/// in the store carries.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_resident_memory() {
        assert!(super::resident_bytes(std::process::id()).unwrap() > 0);
    }
}
