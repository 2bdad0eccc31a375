//! The CloudSim 3.0.3 model of a day (docs/SIMULATOR.md, "Models"): what
//! CloudSim's `PowerDatacenter`, `HostDynamicWorkload` and
//! `VmSchedulerTimeSharedOverSubscription` do, event by event. Events are
//! the scheduling intervals (0.1 s after each boundary, CloudSim's minimum
//! delay between events) and the migrations' completions; at each one every
//! host's allocation is recomputed from the VMs' demands interpolated in
//! time, energy is the trapezoid since the previous event (zero when the
//! host's utilization was zero then), and a VM that asks for no CPU is
//! removed for good.

use super::metrics::HostTime;
use super::{DaySimulation, SimError};

/// Delay of CloudSim's scheduling events after each interval boundary.
const TICK_OFFSET_S: f64 = 0.1;
/// Share of its demand a VM is given on its source while it migrates out
/// (CloudSim's 10 % migration overhead).
const OUT_SHARE: f64 = 0.9;
/// Share of its demand a VM is given on its destination while it moves in.
const IN_SHARE: f64 = 0.1;

/// Where a VM stands on a host at an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Resident,
    MigratingOut,
    MigratingIn,
}

/// What CloudSim keeps from one event to the next: when it was, each
/// host's utilization and SLA state then, each VM's request and allocation.
#[derive(Debug, Clone)]
pub(super) struct Clock {
    first: Option<f64>,
    last: Option<f64>,
    host_util: Vec<f64>,
    host_active: Vec<bool>,
    host_time: Vec<HostTime>,
    vm_requested: Vec<f64>,
    vm_allocated: Vec<f64>,
    vm_migrating: Vec<bool>,
    /// Whether the VM has a state recorded (it ran at the last event).
    vm_recorded: Vec<bool>,
    on_host: Vec<Vec<(usize, Role)>>,
    utils: Vec<f64>,
}

impl Clock {
    pub fn new(hosts: usize, vms: usize) -> Self {
        Self {
            first: None,
            last: None,
            host_util: vec![0.0; hosts],
            host_active: vec![false; hosts],
            host_time: vec![HostTime::default(); hosts],
            vm_requested: vec![0.0; vms],
            vm_allocated: vec![0.0; vms],
            vm_migrating: vec![false; vms],
            vm_recorded: vec![false; vms],
            on_host: vec![Vec::new(); hosts],
            utils: Vec::new(),
        }
    }

    /// Time between the first and the last event, seconds.
    pub fn span_s(&self) -> f64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        }
    }
}

/// One host's state at an event, as CloudSim's scheduler allocates.
struct HostState {
    /// Allocated MIPS as the host's utilization counts them.
    util_mips: f64,
    requested: f64,
    overloaded: bool,
}

impl DaySimulation<'_> {
    /// One scheduling interval in the CloudSim model. CloudSim's first
    /// scheduling event only submits the workload, so interval 0 does
    /// nothing (npa's energy is counted from it, as CloudSim does).
    pub(super) fn step_cloudsim(&mut self) -> Result<(), SimError> {
        let t = self.t;
        let interval = self.scenario.simulation.interval_s;
        let start = t as f64 * interval + TICK_OFFSET_S;
        if t == 0 {
            if !self.power_aware {
                self.clock.first = Some(start);
                self.clock.last = Some(start);
            }
            return Ok(());
        }
        self.set_demands(TICK_OFFSET_S / interval);
        self.event(start, true);
        self.remove_idle_vms();
        self.start_migrations(t)?;
        self.event(start, false);
        let mut ends: Vec<f64> = self
            .inflight
            .iter()
            .flatten()
            .map(|f| f.remaining_s)
            .filter(|&r| r <= interval)
            .collect();
        ends.sort_by(f64::total_cmp);
        ends.dedup();
        for end in ends {
            self.set_demands((TICK_OFFSET_S + end) / interval);
            self.event(start + end, false);
            for v in 0..self.vms.len() {
                if let Some(f) = self.inflight[v]
                    && f.remaining_s <= end
                {
                    self.vm_host[v] = f.to;
                    self.inflight[v] = None;
                }
            }
            self.event(start + end, false);
            self.remove_idle_vms();
        }
        for f in self.inflight.iter_mut().flatten() {
            f.remaining_s -= interval;
        }
        Ok(())
    }

    /// Each running VM's demand at `frac` of the way from this interval's
    /// sample to the next (CloudSim interpolates its traces in time).
    fn set_demands(&mut self, frac: f64) {
        let t = self.t;
        let last = self.scenario.simulation.samples_per_day - 1;
        let (now, next) = (self.day.at(t), self.day.at((t + 1).min(last)));
        for v in 0..self.vms.len() {
            self.demand[v] = if self.alive[v] {
                let (a, b) = (now[v], next[v]);
                (a + frac * (b - a)) * self.vms[v].mips
            } else {
                0.0
            };
        }
    }

    /// Removes for good the VMs that ask for no CPU and are not migrating
    /// (CloudSim's `getCompletedVms`), from the data center and the
    /// engine's view.
    fn remove_idle_vms(&mut self) {
        let mut removed = false;
        for v in 0..self.vms.len() {
            if self.alive[v] && self.inflight[v].is_none() && self.demand[v] == 0.0 {
                self.alive[v] = false;
                removed = true;
            }
        }
        if let Some(engine) = self.engine.as_mut().filter(|_| removed) {
            let alive = &self.alive;
            let keep: Vec<bool> = engine.index.iter().map(|&v| alive[v]).collect();
            let mut i = 0;
            engine.view.vms.retain(|_| {
                i += 1;
                keep[i - 1]
            });
            engine.index.retain(|&v| alive[v]);
        }
    }

    /// An event at `time`: accounts energy and SLA time since the previous
    /// event from the states recorded then, and records the states now.
    /// `tick` marks a scheduling interval (the imbalance is sampled then).
    fn event(&mut self, time: f64, tick: bool) {
        let c = &mut self.clock;
        for list in c.on_host.iter_mut() {
            list.clear();
        }
        for v in 0..self.vms.len() {
            if !self.alive[v] {
                continue;
            }
            let h = self.vm_host[v];
            match self.inflight[v] {
                Some(f) => {
                    c.on_host[h].push((v, Role::MigratingOut));
                    c.on_host[f.to].push((v, Role::MigratingIn));
                    if let Some(via) = f.via {
                        c.on_host[via].push((v, Role::MigratingIn));
                    }
                }
                None => c.on_host[h].push((v, Role::Resident)),
            }
        }
        let dt = c.last.map_or(0.0, |l| time - l);
        if c.first.is_none() {
            c.first = Some(time);
        }
        c.last = Some(time);
        self.clock.utils.clear();
        for h in 0..self.hosts.len() {
            let state = self.host_state(h);
            let cap = self.hosts[h].capacity;
            let mut util = state.util_mips / cap;
            if util > 1.0 && util < 1.01 {
                util = 1.0;
            }
            let model = &self.models[self.hosts[h].model];
            let c = &mut self.clock;
            if self.power_aware {
                if c.host_util[h] > 0.0 {
                    let (a, b) = (model.power(c.host_util[h]), model.power(util));
                    self.metrics.energy((a + (b - a) / 2.0) * dt);
                }
            } else {
                self.metrics.energy(model.max() * dt);
            }
            if c.host_active[h] {
                self.metrics.host_active(h, dt, c.host_time[h]);
            }
            let active = state.util_mips > 0.0;
            if c.host_active[h] && !active && self.power_aware {
                self.metrics.shutdown();
            }
            c.host_util[h] = util;
            c.host_active[h] = active;
            c.host_time[h] = HostTime {
                violating: state.util_mips < state.requested,
                overloaded: state.overloaded,
            };
            if tick && active {
                c.utils.push(util);
            }
        }
        if tick {
            self.metrics.utilizations(&self.clock.utils);
        }
        let c = &mut self.clock;
        for v in 0..self.vms.len() {
            if c.vm_recorded[v] {
                self.metrics.requested(v, c.vm_requested[v] * dt);
                if c.vm_migrating[v] && c.vm_allocated[v] < c.vm_requested[v] {
                    self.metrics
                        .degraded(v, (c.vm_requested[v] - c.vm_allocated[v]) * dt);
                }
            }
            c.vm_recorded[v] = self.alive[v];
            c.vm_requested[v] = self.demand[v];
            c.vm_migrating[v] = self.inflight[v].is_some();
        }
    }

    /// Host `h`'s allocation as CloudSim's over-subscribing time-shared
    /// scheduler makes it: each VM core gets at most one host core; a VM
    /// moving in is given 10 % of its demand and one moving out 90 % (but
    /// counts fully in the host's utilization); when the VMs ask more than
    /// the host has, every allocation is scaled down and rounded down.
    /// Records each resident VM's allocation.
    fn host_state(&mut self, h: usize) -> HostState {
        let spec = &self.hosts[h];
        let cap = spec.capacity;
        let c = &mut self.clock;
        let capped = |v: usize| {
            let cores = self.vms[v].cores.min(spec.cores).max(1) as f64;
            cores * (self.demand[v] / cores).min(spec.core_mips)
        };
        let mut required = 0.0;
        let mut overloaded = false;
        let mut requested = 0.0;
        for &(v, role) in &c.on_host[h] {
            let given = capped(v);
            overloaded |= given < self.demand[v];
            required += if role == Role::MigratingIn {
                given * IN_SHARE
            } else {
                given
            };
            requested += self.demand[v];
        }
        let scale = (required > cap).then(|| cap / required);
        let mut util_mips = 0.0;
        for &(v, role) in &c.on_host[h] {
            let cores = self.vms[v].cores.min(spec.cores).max(1) as f64;
            let per_core = capped(v) / cores;
            let share = match role {
                Role::Resident => 1.0,
                Role::MigratingOut => OUT_SHARE,
                Role::MigratingIn => IN_SHARE,
            };
            let alloc = match scale {
                None => cores * (per_core * share),
                Some(s) => cores * (per_core * s * share).floor(),
            };
            match role {
                Role::MigratingIn => util_mips += alloc,
                Role::MigratingOut => {
                    c.vm_allocated[v] = alloc;
                    util_mips += alloc / OUT_SHARE;
                }
                Role::Resident => {
                    c.vm_allocated[v] = alloc;
                    util_mips += alloc;
                }
            }
        }
        overloaded |= requested > cap + 1e-9;
        HostState {
            util_mips,
            requested,
            overloaded,
        }
    }
}
