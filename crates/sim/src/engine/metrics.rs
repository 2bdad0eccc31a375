//! The metrics of Beloglazov & Buyya 2012 (plus shutdowns and imbalance),
//! accumulated over a simulated day. SLATAH, PDM, SLAV and ESV are given in
//! CloudSim's definitions (what the literature reports) and in Ferry's
//! (`*_ferry`), see docs/SIMULATOR.md "Metrics".

use cluster::{Mode, Reason};

/// Metrics of one day under one policy.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DayResult {
    pub policy: String,
    pub day: String,
    /// Whose semantics the day followed: `ferry` or `cloudsim`.
    pub model: String,
    pub hosts: usize,
    pub vms: usize,
    /// Energy, kWh.
    pub energy_kwh: f64,
    /// SLA violation Time per Active Host, CloudSim's definition: total time
    /// hosts were given less CPU than their VMs asked (a migration's
    /// destination included, while the VM moves in) over total active time.
    pub slatah: f64,
    /// Performance Degradation due to Migrations, CloudSim's definition:
    /// CPU all VMs lost to migrations over the CPU they requested.
    pub pdm: f64,
    /// SLATAH x PDM.
    pub slav: f64,
    /// Energy x SLAV.
    pub esv: f64,
    /// Ferry's SLATAH: the paper's per-host mean of (time overloaded / time
    /// active), counting real overload only (demand above capacity), over
    /// hosts active for at least one scheduling interval.
    pub slatah_ferry: f64,
    /// Ferry's PDM: the paper's per-VM mean of (CPU lost to migrations /
    /// CPU requested).
    pub pdm_ferry: f64,
    /// slatah_ferry x pdm_ferry.
    pub slav_ferry: f64,
    /// Energy x slav_ferry.
    pub esv_ferry: f64,
    pub migrations: u64,
    /// Of which away from hotspots (the rest empty coldspots).
    pub hotspot_migrations: u64,
    /// Times a host went from active to switched off.
    pub host_shutdowns: u64,
    /// Mean number of active (powered) hosts.
    pub mean_active_hosts: f64,
    /// Mean over intervals of the standard deviation of active hosts' CPU utilization.
    pub load_imbalance: f64,
    /// VMs still running at the end of the day (CloudSim removes a VM for
    /// good when it asks for no CPU; Ferry keeps every VM).
    pub vms_at_end: usize,
    /// Times the engine changed its mode (the auto pattern).
    pub mode_switches: u64,
    /// Intervals decided in balance mode.
    pub balance_intervals: usize,
    /// The mode of each decided interval: `c` consolidate, `b` balance
    /// (empty for npa and dvfs).
    pub modes: String,
    /// The pool's load (all demand over all capacity) at each decided
    /// interval.
    pub pool_load: Vec<f64>,
}

/// The sums a day's metrics are computed from, added to as intervals pass.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    energy_j: f64,
    /// Per host: seconds active, of those given less than asked
    /// (CloudSim's violation) and overloaded (Ferry's).
    active_s: Vec<f64>,
    violation_s: Vec<f64>,
    overload_s: Vec<f64>,
    /// Sum over hosts of seconds active.
    active_host_s: f64,
    /// Per VM: CPU requested and CPU lost to migrations, MIPS x s (PDM).
    vm_requested: Vec<f64>,
    vm_degraded: Vec<f64>,
    migrations: u64,
    hotspot_migrations: u64,
    shutdowns: u64,
    /// Sum over intervals of the active hosts' utilization spread.
    imbalance_sum: f64,
    imbalance_n: usize,
    modes: String,
    pool_load: Vec<f64>,
}

/// How a host spent some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct HostTime {
    /// Given less CPU than its VMs asked (CloudSim's violation).
    pub violating: bool,
    /// Its VMs asked more than it has (Ferry's overload).
    pub overloaded: bool,
}

impl Metrics {
    pub fn new(hosts: usize, vms: usize) -> Self {
        Self {
            energy_j: 0.0,
            active_s: vec![0.0; hosts],
            violation_s: vec![0.0; hosts],
            overload_s: vec![0.0; hosts],
            active_host_s: 0.0,
            vm_requested: vec![0.0; vms],
            vm_degraded: vec![0.0; vms],
            migrations: 0,
            hotspot_migrations: 0,
            shutdowns: 0,
            imbalance_sum: 0.0,
            imbalance_n: 0,
            modes: String::new(),
            pool_load: Vec::new(),
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

    /// Energy drawn, joules.
    pub fn energy(&mut self, joules: f64) {
        self.energy_j += joules;
    }

    /// Host `h` was active for `dt` seconds.
    pub fn host_active(&mut self, h: usize, dt: f64, how: HostTime) {
        self.active_s[h] += dt;
        self.active_host_s += dt;
        if how.violating {
            self.violation_s[h] += dt;
        }
        if how.overloaded {
            self.overload_s[h] += dt;
        }
    }

    /// The engine decided an interval in `mode` with the pool at `load`.
    pub fn pattern(&mut self, mode: Mode, load: f64) {
        self.modes.push(match mode {
            Mode::Consolidate => 'c',
            Mode::Balance => 'b',
        });
        self.pool_load.push(load);
    }

    /// An active host was switched off.
    pub fn shutdown(&mut self) {
        self.shutdowns += 1;
    }

    /// The active hosts' utilizations at the start of an interval.
    pub fn utilizations(&mut self, utils: &[f64]) {
        self.imbalance_sum += cluster::stats::std_dev(utils);
        self.imbalance_n += 1;
    }

    /// The day's metrics; `span_s` is the time accounted, `interval_s` the
    /// scheduling interval.
    pub fn result(
        &self,
        names: ResultNames,
        span_s: f64,
        interval_s: f64,
        vms_at_end: usize,
    ) -> DayResult {
        let total = |v: &[f64]| v.iter().sum::<f64>();
        let active = total(&self.active_s);
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let slatah = ratio(total(&self.violation_s), active);
        let pdm = ratio(total(&self.vm_degraded), total(&self.vm_requested));
        let slatah_ferry = mean_ratio(&self.overload_s, &self.active_s, interval_s);
        let pdm_ferry = mean_ratio(&self.vm_degraded, &self.vm_requested, 0.0);
        let energy_kwh = self.energy_j / 3.6e6;
        DayResult {
            policy: names.policy,
            day: names.day,
            model: names.model,
            hosts: self.active_s.len(),
            vms: self.vm_requested.len(),
            energy_kwh,
            slatah,
            pdm,
            slav: slatah * pdm,
            esv: energy_kwh * slatah * pdm,
            slatah_ferry,
            pdm_ferry,
            slav_ferry: slatah_ferry * pdm_ferry,
            esv_ferry: energy_kwh * slatah_ferry * pdm_ferry,
            migrations: self.migrations,
            hotspot_migrations: self.hotspot_migrations,
            host_shutdowns: self.shutdowns,
            mean_active_hosts: ratio(self.active_host_s, span_s),
            load_imbalance: ratio(self.imbalance_sum, self.imbalance_n as f64),
            vms_at_end,
            mode_switches: 0,
            balance_intervals: self.modes.matches('b').count(),
            modes: self.modes.clone(),
            pool_load: self.pool_load.clone(),
        }
    }
}

/// What a day's result is called.
pub(crate) struct ResultNames {
    pub policy: String,
    pub day: String,
    pub model: String,
}

/// Mean of `part[i] / whole[i]` over the `i` with `whole[i] > min_whole`
/// (and > 0); 0 if none.
fn mean_ratio(part: &[f64], whole: &[f64], min_whole: f64) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for (p, w) in part.iter().zip(whole) {
        if *w > 0.0 && *w >= min_whole {
            sum += p / w;
            n += 1;
        }
    }
    if n > 0 { sum / n as f64 } else { 0.0 }
}
