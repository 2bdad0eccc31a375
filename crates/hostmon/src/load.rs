//! Load over an interval: CPU time used between two samples, against the
//! capacity the host declared.

use std::time::{Duration, Instant};

/// Cumulative CPU time used, and when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    pub at: Instant,
    pub usage: Duration,
}

/// How busy a host (or a VM) was over an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuLoad {
    /// CPUs' worth of time used on average (1.0: one CPU busy all along).
    pub cpus: f64,
    /// `cpus` over the declared capacity (1.0: at its quota).
    pub of_capacity: f64,
    pub interval: Duration,
}

impl CpuSample {
    /// The load from `earlier` to this sample for a host of `capacity`
    /// CPUs; None if no time passed, the counter went backwards (a cgroup
    /// created again) or the capacity is not positive.
    pub fn load_since(&self, earlier: &CpuSample, capacity: f64) -> Option<CpuLoad> {
        let interval = self.at.checked_duration_since(earlier.at)?;
        let used = self.usage.checked_sub(earlier.usage)?;
        if interval.is_zero() || !(capacity.is_finite() && capacity > 0.0) {
            return None;
        }
        let cpus = used.as_secs_f64() / interval.as_secs_f64();
        Some(CpuLoad {
            cpus,
            of_capacity: cpus / capacity,
            interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_is_cpu_time_over_wall_time() {
        let t0 = Instant::now();
        let a = CpuSample {
            at: t0,
            usage: Duration::from_secs(10),
        };
        let b = CpuSample {
            at: t0 + Duration::from_secs(2),
            usage: Duration::from_secs(13),
        };
        let load = b.load_since(&a, 1.5).unwrap();
        assert!((load.cpus - 1.5).abs() < 1e-9);
        assert!((load.of_capacity - 1.0).abs() < 1e-9);
        assert_eq!(load.interval, Duration::from_secs(2));
        assert!(a.load_since(&b, 1.5).is_none(), "backwards in time");
        assert!(a.load_since(&a, 1.5).is_none(), "no interval");
        assert!(b.load_since(&a, 0.0).is_none());
        let reset = CpuSample {
            at: t0 + Duration::from_secs(3),
            usage: Duration::ZERO,
        };
        assert!(reset.load_since(&b, 1.0).is_none(), "counter reset");
    }
}
