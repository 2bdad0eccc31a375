//! What `ferry cluster up` starts, checked before anything is made, and
//! where each VM starts and what it runs.

use std::path::PathBuf;
use std::time::Duration;

use units::Bandwidth;

/// Most hosts one machine's cluster may have (addresses are one /24).
pub const MAX_HOSTS: usize = 64;
/// VMs per host at start: the first hosts hold two VMs each and the rest
/// start empty, so the pool has room to relieve a hotspot into.
pub const VMS_PER_HOST: usize = 2;
/// Guest RAM of every VM.
pub const VM_MEMORY: &str = "64M";
/// Memory each host declares for VMs.
pub const HOST_MEMORY: &str = "2G";

/// A cluster on one machine.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub hosts: usize,
    pub vms: usize,
    /// State dirs, secret, logs, the store's socket, the results.
    pub dir: PathBuf,
    /// How long it runs before it stops by itself.
    pub duration: Duration,
    /// Each host's link to the bridge, capped both ways.
    pub link: Bandwidth,
    /// Each host's capacity in CPUs (its cgroup's quota).
    pub capacity: f64,
    /// How often agents report, the manager decides and a sample is taken.
    pub interval: Duration,
    /// Hosts in network namespaces (else all on loopback, links uncapped).
    pub netns: bool,
    /// The `ferry` executable the agents and the manager run.
    pub ferry: PathBuf,
}

impl ClusterConfig {
    /// One line saying what is wrong, if anything.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=MAX_HOSTS).contains(&self.hosts) {
            return Err(format!(
                "--hosts {}: give 2 to {MAX_HOSTS} hosts",
                self.hosts
            ));
        }
        let most = self.hosts * VMS_PER_HOST;
        if !(1..=most).contains(&self.vms) {
            return Err(format!(
                "--vms {}: give 1 to {most} VMs for {} hosts ({VMS_PER_HOST} per host at start)",
                self.vms, self.hosts
            ));
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if !(self.capacity.is_finite() && self.capacity > 0.0 && self.capacity <= cpus) {
            return Err(format!(
                "--capacity {}: give a positive number of CPUs, at most this machine's {cpus}",
                self.capacity
            ));
        }
        if self.duration.is_zero() {
            return Err("--duration: give a duration above zero".into());
        }
        if self.interval.is_zero() || self.interval > self.duration {
            return Err(format!(
                "--interval {}: give a duration above zero and at most --duration {}",
                units::format_duration(self.interval),
                units::format_duration(self.duration)
            ));
        }
        if self.link.bits_per_sec() == 0 {
            return Err("--link: give a rate above zero".into());
        }
        Ok(())
    }

    /// The host VM `vm` starts on (0-based): two per host, first hosts
    /// first.
    pub fn host_of(&self, vm: usize) -> usize {
        vm / VMS_PER_HOST
    }

    /// How long every VM is idle at the start: the quiet period, in
    /// which the manager consolidates (a quarter of the run, 8 s to 60 s).
    pub fn quiet(&self) -> Duration {
        (self.duration / 4).clamp(Duration::from_secs(8), Duration::from_secs(60))
    }

    /// The `--vm` spec of VM `vm`: the dirtier, idle in the quiet period,
    /// then in busy and idle phases staggered across VMs, so that load
    /// (and the dirty rate a migration must keep up with) comes and goes.
    /// Its waits sleep in the VMM (`idle=sleep`), so its host's CPU load
    /// follows its phases; heartbeats are sparse (`hb=100ms`) because
    /// each serial line costs the host CPU too.
    pub fn vm_spec(&self, vm: usize) -> String {
        let period = (self.duration / 3).clamp(Duration::from_secs(8), Duration::from_secs(120));
        let half = period.as_millis() / 2;
        let offset = period.as_millis() * vm as u128 / self.vms as u128;
        let mut phases = vec![format!("idle:{}ms", self.quiet().as_millis() + offset)];
        let mut busy = true;
        while phases.len() < 8 {
            let kind = if busy { "busy" } else { "idle" };
            phases.push(format!("{kind}:{half}ms"));
            busy = !busy;
        }
        format!(
            "vm{}=dirtier,memory={VM_MEMORY},append=ws=8M pattern=hot hot=0.25 rate=4000 idle=sleep hb=100ms phases={}",
            vm + 1,
            phases.join(",")
        )
    }
}

/// Host `i`'s name (0-based): `h1`, `h2`...
pub fn host_name(i: usize) -> String {
    format!("h{}", i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClusterConfig {
        ClusterConfig {
            hosts: 2,
            vms: 2,
            dir: "d".into(),
            duration: Duration::from_secs(40),
            link: Bandwidth::parse("1Gbit").unwrap(),
            capacity: 0.5,
            interval: Duration::from_secs(1),
            netns: true,
            ferry: "ferry".into(),
        }
    }

    #[test]
    fn bad_settings_are_one_line_each() {
        assert_eq!(config().validate(), Ok(()));
        type Change = fn(&mut ClusterConfig);
        let cases: [(Change, &str); 9] = [
            (|c| c.hosts = 1, "--hosts 1"),
            (|c| c.hosts = 65, "--hosts 65"),
            (|c| c.vms = 0, "--vms 0"),
            (|c| c.vms = 5, "--vms 5"),
            (|c| c.capacity = 0.0, "--capacity 0"),
            (|c| c.capacity = f64::NAN, "--capacity NaN"),
            (|c| c.capacity = 1e6, "--capacity 1000000"),
            (|c| c.duration = Duration::ZERO, "--duration"),
            (|c| c.interval = Duration::from_secs(41), "--interval 41s"),
        ];
        for (change, want) in cases {
            let mut c = config();
            change(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.starts_with(want), "{want}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn vms_start_two_per_host_quiet_then_staggered() {
        let c = ClusterConfig {
            hosts: 3,
            vms: 3,
            ..config()
        };
        assert_eq!((0..3).map(|v| c.host_of(v)).collect::<Vec<_>>(), [0, 0, 1]);
        let first = c.vm_spec(0);
        assert!(
            first.starts_with("vm1=dirtier,memory=64M,append="),
            "{first}"
        );
        assert!(first.contains(" idle=sleep "), "{first}");
        // Every VM is idle in the quiet period, the later ones longer.
        assert!(first.contains("phases=idle:10000ms,busy:"), "{first}");
        let second = c.vm_spec(1);
        assert!(second.contains("phases=idle:14444ms,busy:"), "{second}");
        for v in 0..3 {
            let s = c.vm_spec(v);
            let phases = s.rsplit_once("phases=").unwrap().1;
            assert_eq!(phases.split(',').count(), 8, "{s}");
        }
    }
}
