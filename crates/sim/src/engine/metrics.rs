//! The metrics of Beloglazov & Buyya 2012 (plus shutdowns and imbalance),
//! accumulated over a simulated day.

use cluster::Reason;

/// Metrics of one day under one policy.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DayResult {
    pub policy: String,
    pub day: String,
    pub hosts: usize,
    pub vms: usize,
    /// Energy, kWh.
    pub energy_kwh: f64,
    /// SLA violation Time per Active Host: mean over hosts of (time at 100 %
    /// utilization / time active).
    pub slatah: f64,
    /// Performance Degradation due to Migrations: mean over VMs of (CPU lost
    /// to migrations / CPU requested).
    pub pdm: f64,
    /// SLATAH x PDM.
    pub slav: f64,
    /// Energy x SLAV.
    pub esv: f64,
    pub migrations: u64,
    /// Of which away from hotspots (the rest empty coldspots).
    pub hotspot_migrations: u64,
    /// Times a host went from active to switched off.
    pub host_shutdowns: u64,
    /// Mean number of active (powered) hosts.
    pub mean_active_hosts: f64,
    /// Mean over intervals of the standard deviation of active hosts' CPU utilization.
    pub load_imbalance: f64,
}

/// The sums a day's metrics are computed from, added to as intervals pass.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    energy_j: f64,
    /// Per host: seconds powered, and of those at 100 % (SLATAH).
    active_s: Vec<f64>,
    violation_s: Vec<f64>,
    /// Sum over hosts of seconds powered.
    active_host_s: f64,
    /// Per VM: CPU requested and CPU lost to migrations, MIPS x s (PDM).
    vm_requested: Vec<f64>,
    vm_degraded: Vec<f64>,
    migrations: u64,
    hotspot_migrations: u64,
    shutdowns: u64,
    /// Sum over intervals of the active hosts' utilization spread.
    imbalance_sum: f64,
}

impl Metrics {
    pub fn new(hosts: usize, vms: usize) -> Self {
        Self {
            energy_j: 0.0,
            active_s: vec![0.0; hosts],
            violation_s: vec![0.0; hosts],
            active_host_s: 0.0,
            vm_requested: vec![0.0; vms],
            vm_degraded: vec![0.0; vms],
            migrations: 0,
            hotspot_migrations: 0,
            shutdowns: 0,
            imbalance_sum: 0.0,
        }
    }

    /// A migration started.
    pub fn migration(&mut self, reason: Reason) {
        self.migrations += 1;
        self.hotspot_migrations += (reason == Reason::Hotspot) as u64;
    }

    /// VM `v` asked for `cpu` (MIPS x s).
    pub fn requested(&mut self, v: usize, cpu: f64) {
        self.vm_requested[v] += cpu;
    }

    /// VM `v` lost `cpu` (MIPS x s) to a migration.
    pub fn degraded(&mut self, v: usize, cpu: f64) {
        self.vm_degraded[v] += cpu;
    }

    /// Host `h` was on for `dt` seconds drawing `watts`, overloaded or not.
    pub fn host_on(&mut self, h: usize, watts: f64, dt: f64, overloaded: bool) {
        self.energy_j += watts * dt;
        self.active_s[h] += dt;
        self.active_host_s += dt;
        if overloaded {
            self.violation_s[h] += dt;
        }
    }

    /// An active host was switched off.
    pub fn shutdown(&mut self) {
        self.shutdowns += 1;
    }

    /// The active hosts' utilizations at the start of an interval.
    pub fn utilizations(&mut self, utils: &[f64]) {
        self.imbalance_sum += cluster::stats::std_dev(utils);
    }

    /// The day's metrics after `intervals` intervals of `interval_s`.
    pub fn result(
        &self,
        policy: String,
        day: String,
        intervals: usize,
        interval_s: f64,
    ) -> DayResult {
        let slatah = mean_ratio(&self.violation_s, &self.active_s);
        let pdm = mean_ratio(&self.vm_degraded, &self.vm_requested);
        let energy_kwh = self.energy_j / 3.6e6;
        let slav = slatah * pdm;
        let day_s = intervals as f64 * interval_s;
        DayResult {
            policy,
            day,
            hosts: self.active_s.len(),
            vms: self.vm_requested.len(),
            energy_kwh,
            slatah,
            pdm,
            slav,
            esv: energy_kwh * slav,
            migrations: self.migrations,
            hotspot_migrations: self.hotspot_migrations,
            host_shutdowns: self.shutdowns,
            mean_active_hosts: self.active_host_s / day_s,
            load_imbalance: self.imbalance_sum / intervals as f64,
        }
    }
}

/// Mean of `part[i] / whole[i]` over the `i` with `whole[i] > 0`; 0 if none.
fn mean_ratio(part: &[f64], whole: &[f64]) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for (p, w) in part.iter().zip(whole) {
        if *w > 0.0 {
            sum += p / w;
            n += 1;
        }
    }
    if n > 0 { sum / n as f64 } else { 0.0 }
}
