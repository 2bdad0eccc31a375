//! The guest workloads `ferry bench migrate` runs, each the same under
//! Ferry and QEMU.

use std::time::Duration;

/// A named guest workload of the migration benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Workload {
    pub name: &'static str,
    pub guest: &'static str,
    pub append: &'static str,
    /// Serial line prefix that marks the workload as started (both VMMs).
    pub ready: &'static str,
    /// Working set in bytes written at `rate` pages/s (dirtier), so the
    /// start point is when it has been written once.
    pub ws: u64,
    pub rate: u64,
    /// Fixed time after `ready` for workloads without a paced rate.
    pub settle_ms: u64,
}

impl Workload {
    /// Time after `ready` until the working set has been written once.
    pub fn fill(&self) -> Duration {
        if self.rate == 0 {
            Duration::from_millis(self.settle_ms)
        } else {
            Duration::from_secs_f64((self.ws / 4096) as f64 / self.rate as f64)
        }
    }
}

pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "idle",
        guest: "idle",
        append: "",
        ready: "HB ",
        ws: 0,
        rate: 0,
        settle_ms: 0,
    },
    Workload {
        name: "dirty-5k",
        guest: "dirtier",
        append: "ws=256M rate=5000 pattern=random",
        ready: "HB ",
        ws: 256 << 20,
        rate: 5000,
        settle_ms: 0,
    },
    Workload {
        name: "dirty-20k",
        guest: "dirtier",
        append: "ws=256M rate=20000 pattern=random",
        ready: "HB ",
        ws: 256 << 20,
        rate: 20000,
        settle_ms: 0,
    },
    Workload {
        name: "hot-20k",
        guest: "dirtier",
        append: "ws=256M rate=20000 pattern=hot hot=0.1 hotshare=0.9",
        ready: "HB ",
        ws: 256 << 20,
        rate: 20000,
        settle_ms: 0,
    },
    // Writes its working set as fast as it can for 3 s, then only
    // heartbeats: 256 MiB of static data, the engine's raw throughput.
    Workload {
        name: "static",
        guest: "dirtier",
        append: "ws=256M rate=0 pattern=seq phases=busy:3s,idle:1s",
        ready: "HB ",
        ws: 256 << 20,
        rate: 0,
        settle_ms: 3000,
    },
    Workload {
        name: "kvstore",
        guest: "kvstore",
        append: "keys=500000 vsize=256",
        ready: "KV ",
        ws: 0,
        rate: 0,
        settle_ms: 0,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_point_is_the_time_to_write_the_working_set_once() {
        let w = |n: &str| WORKLOADS.iter().find(|w| w.name == n).unwrap().fill();
        assert_eq!(w("idle"), Duration::ZERO);
        assert_eq!(w("static"), Duration::from_secs(3));
        // 65,536 pages at 20,000 pages/s.
        assert_eq!(w("dirty-20k"), Duration::from_secs_f64(3.2768));
    }
}
