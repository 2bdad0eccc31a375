//! The simulation of one day for one policy: a [`DaySimulation`] steps
//! through the scheduling intervals; its metrics add up what
//! Beloglazov & Buyya 2012 measure.

mod cloudsim;
mod datacenter;
mod metrics;
mod migration_time;

use cluster::{HISTORY_LEN, Manager, Model, PoolView, PowerModel};

use crate::policy::Policy;
use crate::scenario::Scenario;
use crate::trace::Day;
use datacenter::{HostSpec, VmSpec};
use metrics::{HostTime, Metrics, ResultNames};

pub use metrics::DayResult;
pub use migration_time::{MemoryOverBandwidth, MigrationTime, PreCopy};

/// Problems found while simulating.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(
        "day {day}: VM {index} ({file}, type {vm_type}) fits on no host: the data center is full"
    )]
    NoRoom {
        day: String,
        index: usize,
        file: String,
        vm_type: String,
    },
    #[error("day {day}: decision engine: {source}")]
    Engine {
        day: String,
        #[source]
        source: cluster::ClusterError,
    },
}

/// Simulates one day of traces under one policy.
pub fn simulate_day(
    scenario: &Scenario,
    day: &Day,
    policy: &Policy,
    seed: u64,
) -> Result<DayResult, SimError> {
    let mut sim = DaySimulation::new(scenario, day, policy, seed)?;
    while !sim.is_over() {
        sim.step()?;
    }
    Ok(sim.finish())
}

/// A migration under way.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    to: usize,
    remaining_s: f64,
    /// A first destination the same plan moved the VM to before moving it
    /// on (CloudSim's rules allow it): it carries the VM moving in too.
    via: Option<usize>,
}

/// The decision engine and the view it is given each interval.
struct Engine {
    manager: Manager,
    view: PoolView,
    /// The simulator's VM behind each of the view's VMs (VMs CloudSim has
    /// removed are left out of the view).
    index: Vec<usize>,
    /// The interval up to which the view's VM histories are filled.
    filled_to: Option<usize>,
}

/// Per-host loads that do not change within an interval (from VMs that are
/// not migrating), and the migrating VMs that touch each host.
#[derive(Debug, Clone, Default)]
struct FixedLoads {
    cpu: Vec<f64>,
    vms: Vec<u32>,
    /// VMs given less than they ask because of their cores.
    core_violations: Vec<u32>,
    touching: Vec<Vec<usize>>,
}

/// One day of one policy, simulated one scheduling interval at a time.
pub struct DaySimulation<'a> {
    scenario: &'a Scenario,
    day: &'a Day,
    policy: &'a Policy,
    /// The next interval.
    t: usize,
    hosts: Vec<HostSpec>,
    models: Vec<PowerModel>,
    vms: Vec<VmSpec>,
    /// Power follows load and empty hosts are off (every policy but npa).
    power_aware: bool,
    /// Whose semantics: Ferry's or CloudSim's.
    model: Model,
    /// VMs still running (CloudSim removes a VM that asks for no CPU).
    alive: Vec<bool>,
    /// The CloudSim model's state between events.
    clock: cloudsim::Clock,
    time_model: Box<dyn MigrationTime + Send + Sync>,
    /// Managed policies only.
    engine: Option<Engine>,
    vm_host: Vec<usize>,
    inflight: Vec<Option<InFlight>>,
    /// Each VM's CPU demand this interval, MIPS.
    demand: Vec<f64>,
    loads: FixedLoads,
    /// Hosts with a VM at the end of the previous interval.
    was_active: Vec<bool>,
    metrics: Metrics,
    // Per-interval buffers.
    utils: Vec<f64>,
    cuts: Vec<f64>,
    active: Vec<bool>,
}

impl<'a> DaySimulation<'a> {
    /// The data center of `scenario` with the day's VMs placed; `seed` seeds
    /// the random selector.
    pub fn new(
        scenario: &'a Scenario,
        day: &'a Day,
        policy: &'a Policy,
        seed: u64,
    ) -> Result<Self, SimError> {
        let (hosts, models) = datacenter::build_hosts(scenario);
        let vms = datacenter::build_vms(scenario, day.vms());
        let model = scenario.simulation.model;
        let vm_host = datacenter::initial_placement(&hosts, &models, &vms, policy, day, scenario)?;
        let engine = match policy.config(&scenario.manager, model) {
            Some(config) => Some(Engine {
                manager: Manager::new(config, seed).map_err(|e| SimError::Engine {
                    day: day.name.clone(),
                    source: e,
                })?,
                view: datacenter::pool_view(scenario, &hosts, &models, &vms),
                index: (0..vms.len()).collect(),
                filled_to: None,
            }),
            None => None,
        };
        let (nh, nv) = (hosts.len(), vms.len());
        let mut was_active = vec![false; nh];
        for &h in &vm_host {
            was_active[h] = true;
        }
        Ok(Self {
            scenario,
            day,
            policy,
            t: 0,
            power_aware: !matches!(policy, Policy::Npa),
            model,
            alive: vec![true; nv],
            clock: cloudsim::Clock::new(nh, nv),
            time_model: migration_time::from_scenario(&scenario.migration),
            engine,
            vm_host,
            inflight: vec![None; nv],
            demand: vec![0.0; nv],
            loads: FixedLoads {
                cpu: vec![0.0; nh],
                vms: vec![0; nh],
                core_violations: vec![0; nh],
                touching: vec![Vec::new(); nh],
            },
            was_active,
            metrics: Metrics::new(nh, nv),
            utils: Vec::with_capacity(nh),
            cuts: Vec::new(),
            active: vec![false; nh],
            hosts,
            models,
            vms,
        })
    }

    /// Whether every interval of the day has been simulated.
    pub fn is_over(&self) -> bool {
        self.t >= self.scenario.simulation.samples_per_day
    }

    /// Simulates the next interval (nothing once the day is over): demands
    /// from the traces, the engine's migrations, energy and SLA accounting,
    /// then migrations that complete.
    pub fn step(&mut self) -> Result<(), SimError> {
        if self.is_over() {
            return Ok(());
        }
        if self.model == Model::CloudSim {
            self.step_cloudsim()?;
            self.t += 1;
            return Ok(());
        }
        let t = self.t;
        let at = self.day.at(t);
        for v in 0..self.vms.len() {
            self.demand[v] = at[v] * self.vms[v].mips;
        }
        self.start_migrations(t)?;
        self.fix_loads();
        self.utils.clear();
        for h in 0..self.hosts.len() {
            self.account_host(h);
        }
        self.metrics.utilizations(&self.utils);
        self.finish_migrations();
        self.t += 1;
        Ok(())
    }

    /// The metrics of the intervals simulated so far.
    pub fn finish(self) -> DayResult {
        let interval = self.scenario.simulation.interval_s;
        let span = match self.model {
            Model::Ferry => self.t as f64 * interval,
            Model::CloudSim => self.clock.span_s(),
        };
        let names = ResultNames {
            policy: self.policy.to_string(),
            day: self.day.name.clone(),
            model: self.model.to_string(),
        };
        let vms_at_end = self.alive.iter().filter(|a| **a).count();
        let switches = self.engine.as_ref().map_or(0, |e| e.manager.switches());
        let mut r = self.metrics.result(names, span, interval, vms_at_end);
        r.mode_switches = switches;
        r
    }

    /// Shows the engine the pool at interval `t` and starts the migrations
    /// it decides (managed policies).
    fn start_migrations(&mut self, t: usize) -> Result<(), SimError> {
        let Some(engine) = self.engine.as_mut() else {
            return Ok(());
        };
        let view = &mut engine.view;
        view.time_s = t as f64 * self.scenario.simulation.interval_s;
        for h in view.hosts.iter_mut() {
            h.on = false;
        }
        // Each window slides by one value per interval (a VM the view
        // drops takes its window with it).
        let slide = t > 0 && engine.filled_to == Some(t - 1);
        engine.filled_to = Some(t);
        let at = self.day.at(t);
        for (i, &v) in engine.index.iter().enumerate() {
            let info = &mut view.vms[i];
            info.host = self.vm_host[v];
            info.cpu_demand = self.demand[v];
            let from = (t + 1).saturating_sub(HISTORY_LEN);
            if slide {
                if info.history.len() == HISTORY_LEN {
                    info.history.remove(0);
                }
                info.history.push(at[v]);
            } else {
                info.history.clear();
                info.history.extend(self.day.window(v, from, t));
            }
            debug_assert!(info.history.iter().copied().eq(self.day.window(v, from, t)));
            info.migrating_to = self.inflight[v].map(|f| f.to);
            view.hosts[self.vm_host[v]].on = true;
            if let Some(f) = self.inflight[v] {
                view.hosts[f.to].on = true;
            }
        }
        let plan = engine.manager.decide(view).map_err(|e| SimError::Engine {
            day: self.day.name.clone(),
            source: e,
        })?;
        self.metrics.pattern(plan.mode, engine.manager.pool_load());
        for m in &plan.migrations {
            let v = engine.index[m.vm];
            let bw = view.migration_bandwidth_mb_s(m.from, m.to);
            let dirty = view.vms[m.vm].dirty_rate_mb_s;
            let duration = self.time_model.duration_s(self.vms[v].ram, bw, dirty);
            // A VM moved twice in one plan (CloudSim's rules allow it) ends
            // on the second destination.
            let via = self.inflight[v].filter(|f| f.to == m.from).map(|f| f.to);
            self.inflight[v] = Some(InFlight {
                to: m.to,
                remaining_s: duration,
                via,
            });
            self.metrics.migration(m.reason);
        }
        Ok(())
    }

    /// Loads that do not change within the interval, and what the VMs ask
    /// and lose to migrations.
    fn fix_loads(&mut self) {
        let interval = self.scenario.simulation.interval_s;
        let degradation = self.scenario.migration.degradation;
        let l = &mut self.loads;
        l.cpu.fill(0.0);
        l.vms.fill(0);
        l.core_violations.fill(0);
        for list in l.touching.iter_mut() {
            list.clear();
        }
        for v in 0..self.vms.len() {
            let demand = self.demand[v];
            self.metrics.requested(v, demand * interval);
            let h = self.vm_host[v];
            if let Some(f) = self.inflight[v] {
                l.touching[h].push(v);
                l.touching[f.to].push(v);
                let c = f.remaining_s.min(interval);
                self.metrics.degraded(v, degradation * demand * c);
            } else {
                let c = self.hosts[h].cpu_given(demand, &self.vms[v]);
                l.cpu[h] += c;
                l.vms[h] += 1;
                if c < demand - 1e-9 {
                    l.core_violations[h] += 1;
                }
            }
        }
    }

    /// Energy and overload of host `h` over the interval, integrated over
    /// piecewise-constant segments split at migration completions.
    fn account_host(&mut self, h: usize) {
        let interval = self.scenario.simulation.interval_s;
        let spec = &self.hosts[h];
        let model = &self.models[spec.model];
        self.cuts.clear();
        self.cuts.extend(
            self.loads.touching[h]
                .iter()
                .map(|&v| {
                    self.inflight[v]
                        .expect("touching VMs are in flight")
                        .remaining_s
                })
                .filter(|c| *c < interval),
        );
        self.cuts.push(interval);
        self.cuts.sort_by(f64::total_cmp);
        self.cuts.dedup();
        let mut start = 0.0;
        for &end in &self.cuts {
            let (cpu, present, core_violations, arriving) = self.segment_load(h, start);
            let dt = end - start;
            if !self.power_aware || present > 0 {
                let u = (cpu / spec.capacity).min(1.0);
                let watts = if self.power_aware {
                    model.power(u)
                } else {
                    model.max()
                };
                let overloaded = cpu > spec.capacity + 1e-9 || core_violations > 0;
                self.metrics.energy(watts * dt);
                let how = HostTime {
                    overloaded,
                    violating: overloaded || arriving > 0,
                };
                self.metrics.host_active(h, dt, how);
                if start == 0.0 {
                    self.utils.push(cpu / spec.capacity);
                }
            }
            start = end;
        }
    }

    /// Host `h`'s CPU use, VMs present, VMs short of their cores' CPU and
    /// VMs still moving in, from time `start` of the interval until the next
    /// migration completes. A migrating VM runs on its source until it
    /// arrives; its destination carries `degradation` of its demand meanwhile.
    fn segment_load(&self, h: usize, start: f64) -> (f64, u32, u32, u32) {
        let degradation = self.scenario.migration.degradation;
        let spec = &self.hosts[h];
        let mut cpu = self.loads.cpu[h];
        let mut present = self.loads.vms[h];
        let mut core_violations = self.loads.core_violations[h];
        let mut arriving = 0;
        for &v in &self.loads.touching[h] {
            let f = self.inflight[v].expect("in flight");
            let done = start >= f.remaining_s;
            let c = spec.cpu_given(self.demand[v], &self.vms[v]);
            let violated = c < self.demand[v] - 1e-9;
            if self.vm_host[v] == h {
                if !done {
                    cpu += c;
                    present += 1;
                    core_violations += violated as u32;
                }
            } else {
                present += 1;
                if done {
                    cpu += c;
                    core_violations += violated as u32;
                } else {
                    cpu += degradation * self.demand[v];
                    arriving += 1;
                }
            }
        }
        (cpu, present, core_violations, arriving)
    }

    /// Completes the migrations that end within the interval; hosts left
    /// without a VM are switched off.
    fn finish_migrations(&mut self) {
        let interval = self.scenario.simulation.interval_s;
        for v in 0..self.vms.len() {
            if let Some(f) = self.inflight[v].as_mut() {
                if f.remaining_s <= interval {
                    self.vm_host[v] = f.to;
                    self.inflight[v] = None;
                } else {
                    f.remaining_s -= interval;
                }
            }
        }
        if !self.power_aware {
            return;
        }
        self.active.fill(false);
        for v in 0..self.vms.len() {
            self.active[self.vm_host[v]] = true;
            if let Some(f) = self.inflight[v] {
                self.active[f.to] = true;
            }
        }
        for h in 0..self.hosts.len() {
            if self.was_active[h] && !self.active[h] {
                self.metrics.shutdown();
            }
        }
        std::mem::swap(&mut self.was_active, &mut self.active);
    }
}
