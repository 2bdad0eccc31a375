//! The guest workloads `ferry bench migrate` runs, each the same under
//! Ferry and QEMU.

use std::time::Duration;

/// A named guest workload of the migration benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Workload {
    pub name: &'static str,
    pub guest: &'static str,
    pub append: &'static str,
    pub vcpus: u32,
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
        vcpus: 1,
        ready: "HB ",
        ws: 0,
        rate: 0,
        settle_ms: 0,
    },
    Workload {
        name: "dirty-5k",
        guest: "dirtier",
        append: "ws=256M rate=5000 pattern=random",
        vcpus: 1,
        ready: "HB ",
        ws: 256 << 20,
        rate: 5000,
        settle_ms: 0,
    },
    Workload {
        name: "dirty-20k",
        guest: "dirtier",
        append: "ws=256M rate=20000 pattern=random",
        vcpus: 1,
        ready: "HB ",
        ws: 256 << 20,
        rate: 20000,
        settle_ms: 0,
    },
    Workload {
        name: "hot-20k",
        guest: "dirtier",
        append: "ws=256M rate=20000 pattern=hot hot=0.1 hotshare=0.9",
        vcpus: 1,
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
        vcpus: 1,
        ready: "HB ",
        ws: 256 << 20,
        rate: 0,
        settle_ms: 3000,
    },
    // Idle for 1 s, then a hot set, then 1.5 s later a hot set half a
    // working set away: with the default 2 s warm-up the migration starts
    // in the first busy phase and the hot set moves under it, so what the
    // first rounds saw misleads the later ones. (Started in an idle phase,
    // the all-zero guest migrated before anything happened.)
    Workload {
        name: "phase",
        guest: "dirtier",
        append: "ws=256M rate=20000 pattern=hot hot=0.1 hotshare=0.9 phases=idle:1s,busy:1500ms,busy@0.5:0",
        vcpus: 1,
        ready: "HB ",
        ws: 256 << 20,
        rate: 0,
        settle_ms: 0,
    },
    // Hot/cold with temporal locality: the hot tenth moves by 2 % of the
    // working set per second, so a page stays hot for about 5 s.
    Workload {
        name: "drift-20k",
        guest: "dirtier",
        append: "ws=256M rate=20000 pattern=hot hot=0.1 hotshare=0.95 drift=0.02",
        vcpus: 1,
        ready: "HB ",
        ws: 256 << 20,
        rate: 20000,
        settle_ms: 0,
    },
    // As fast as the machine allows on 2 vCPUs (under dirty logging a
    // vCPU's first write to a page faults: ~30k pages/s per vCPU here).
    Workload {
        name: "max-2vcpu",
        guest: "dirtier",
        append: "ws=256M rate=0 pattern=random",
        vcpus: 2,
        ready: "HB ",
        ws: 256 << 20,
        rate: 0,
        settle_ms: 3000,
    },
    Workload {
        name: "kvstore",
        guest: "kvstore",
        append: "keys=500000 vsize=256",
        vcpus: 1,
        ready: "KV ",
        ws: 0,
        rate: 0,
        settle_ms: 0,
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn start_point_is_the_time_to_write_the_working_set_once() {
        let w = |n: &str| WORKLOADS.iter().find(|w| w.name == n).unwrap().fill();
        assert_eq!(w("idle"), Duration::ZERO);
        assert_eq!(w("static"), Duration::from_secs(3));
        // 65,536 pages at 20,000 pages/s.
        assert_eq!(w("dirty-20k"), Duration::from_secs_f64(3.2768));
    }

    /// The guest command lines the benchmark uses are valid, and every
    /// workload added with the issue-8 set boots and passes its own
    /// integrity check (a short run with its parameters on its vCPUs).
    #[test]
    fn workloads_boot_and_verify() {
        for w in WORKLOADS {
            let program = guest::params::Program::from_name(w.guest).unwrap();
            guest::params::parse(program, w.append).unwrap_or_else(|e| panic!("{}: {e}", w.name));
        }
        testkit::require_kvm();
        for name in ["phase", "drift-20k", "max-2vcpu"] {
            let w = WORKLOADS.iter().find(|w| w.name == name).unwrap();
            let out = Arc::new(Mutex::new(Vec::<u8>::new()));
            let o = out.clone();
            let vm = vmm::Vm::boot(
                &vmm::BootSpec {
                    kernel: guest::image(w.guest).unwrap(),
                    kernel_name: w.guest.into(),
                    cmdline: format!("{} run=4s verify=1s", w.append),
                    memory_bytes: 512 << 20,
                    vcpus: w.vcpus,
                },
                Box::new(move |b: &[u8], _| o.lock().unwrap().extend_from_slice(b)),
            )
            .unwrap();
            let exit = vm.wait(Some(Duration::from_secs(120)));
            let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
            let tail: Vec<&str> = text.lines().rev().take(4).collect();
            assert_eq!(exit, Some(vmm::ExitReason::Guest(1)), "{name}: {tail:?}");
            assert!(
                text.contains(&format!("vcpus={}", w.vcpus)),
                "{name}: {tail:?}"
            );
            assert!(
                text.lines().any(|l| l.starts_with("VERIFY ok")),
                "{name}: {tail:?}"
            );
        }
    }
}
