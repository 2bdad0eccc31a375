//! Whether a run fits in this machine's memory, checked before any work so
//! an impossible size (`count = 1e11` hosts) is one clear error instead of
//! an allocation failure.

use std::path::Path;

use crate::scenario::Scenario;

/// Bytes a simulation keeps per host (its spec, the engine's view and
/// tentative allocation with a 30-sample history, the per-host sums),
/// rounded up.
pub const BYTES_PER_HOST: u64 = 1024;
/// Bytes a simulation keeps per VM besides its trace (spec, view, history,
/// sums), rounded up.
pub const BYTES_PER_VM: u64 = 1024;

/// Memory a run needs: every selected day's traces (8 bytes a sample) plus,
/// per worker thread, one day's hosts and VMs. `None` when it does not even
/// fit in 64 bits.
pub fn bytes_needed(hosts: u64, vms_per_day: &[u64], samples: u64, threads: u64) -> Option<u64> {
    let traces = vms_per_day.iter().try_fold(0u64, |acc, v| {
        acc.checked_add(v.checked_mul(samples)?.checked_mul(8)?)
    })?;
    let max_vms = vms_per_day.iter().copied().max().unwrap_or(0);
    let per_sim = hosts
        .checked_mul(BYTES_PER_HOST)?
        .checked_add(max_vms.checked_mul(BYTES_PER_VM)?)?;
    traces.checked_add(per_sim.checked_mul(threads.max(1))?)
}

/// The machine's physical memory (MemTotal of /proc/meminfo), when known.
pub fn machine_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Trace files in one day folder, counted without reading them.
pub fn count_files(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count() as u64
    })
}

/// A run that would not fit: what it needs and what the machine has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{hosts} hosts and up to {vms} VMs a day need about {} of memory; this machine has {}",
    units::format_bytes(*.needed), units::format_bytes(*.available)
)]
pub struct TooLarge {
    pub hosts: u64,
    pub vms: u64,
    pub needed: u64,
    pub available: u64,
}

/// Refuses a run that needs more memory than the machine has.
pub fn check(
    s: &Scenario,
    vms_per_day: &[u64],
    threads: usize,
    available: Option<u64>,
) -> Result<(), TooLarge> {
    let hosts = s.host_count();
    let vms = vms_per_day.iter().copied().max().unwrap_or(0);
    let samples = s.simulation.samples_per_day as u64;
    let needed = bytes_needed(hosts, vms_per_day, samples, threads as u64).unwrap_or(u64::MAX);
    match available {
        Some(available) if needed > available => Err(TooLarge {
            hosts,
            vms,
            needed,
            available,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_add_up_and_overflow_is_refused() {
        // 800 hosts, 1052 VMs of 288 samples, 2 threads.
        let n = bytes_needed(800, &[1052], 288, 2).unwrap();
        assert_eq!(n, 1052 * 288 * 8 + 2 * (800 * 1024 + 1052 * 1024));
        assert_eq!(bytes_needed(u64::MAX / 2, &[1], 288, 1), None);
        let mut s = Scenario::builtin().scenario;
        assert!(check(&s, &[1052], 2, Some(1 << 34)).is_ok());
        s.host_types[0].count = 100_000_000_000;
        let e = check(&s, &[1052], 2, Some(24 << 30))
            .unwrap_err()
            .to_string();
        assert!(e.contains("100000000400 hosts"), "{e}");
        assert!(e.contains("this machine has 24 GiB"), "{e}");
        // Unknown machine size: no refusal.
        assert!(check(&s, &[1052], 2, None).is_ok());
    }
}
