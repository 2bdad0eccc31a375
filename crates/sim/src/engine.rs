//! The simulation of one day for one policy, and the metrics of
//! Beloglazov & Buyya 2012.

use cluster::{Config, HostInfo, Manager, MigrationLimits, Pattern, PoolView, PowerModel, VmInfo};

use crate::policy::Policy;
use crate::scenario::Scenario;
use crate::trace::Day;

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

/// How long a live migration takes.
pub trait MigrationTime {
    /// Seconds to migrate `ram_mb` over `bw_mb_s`; `dirty_rate_mb_s` is the
    /// VM's page-dirtying rate when known.
    fn duration_s(&self, ram_mb: f64, bw_mb_s: f64, dirty_rate_mb_s: Option<f64>) -> f64;
}

/// The paper's model: memory size / available bandwidth.
#[derive(Debug, Clone, Copy)]
pub struct MemoryOverBandwidth;

impl MigrationTime for MemoryOverBandwidth {
    fn duration_s(&self, ram_mb: f64, bw_mb_s: f64, _: Option<f64>) -> f64 {
        ram_mb / bw_mb_s
    }
}

/// Iterative pre-copy: each round resends what the previous round's duration
/// let the guest dirty, until little is left, the rounds run out, or it stops
/// shrinking; then stop-and-copy. The dirty rate is the VM's own when the
/// pre-copy engine reports one, else `default_dirty_rate_mb_s`.
#[derive(Debug, Clone, Copy)]
pub struct PreCopy {
    pub default_dirty_rate_mb_s: f64,
    pub max_rounds: u32,
    pub stop_copy_mb: f64,
}

impl MigrationTime for PreCopy {
    fn duration_s(&self, ram_mb: f64, bw_mb_s: f64, dirty: Option<f64>) -> f64 {
        let d = dirty.unwrap_or(self.default_dirty_rate_mb_s);
        let mut to_send = ram_mb;
        let mut total = 0.0;
        for _ in 0..self.max_rounds {
            let t = to_send / bw_mb_s;
            total += t;
            let next = (d * t).min(ram_mb);
            if next <= self.stop_copy_mb || next >= to_send {
                to_send = next;
                break;
            }
            to_send = next;
        }
        total + to_send / bw_mb_s
    }
}

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

#[derive(Debug, Clone)]
struct HostSpec {
    cores: u32,
    core_mips: f64,
    capacity: f64,
    ram: f64,
    bw_mbps: f64,
    model: usize,
}

#[derive(Debug, Clone, Copy)]
struct VmSpec {
    mips: f64,
    cores: u32,
    ram: f64,
    vm_type: usize,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    to: usize,
    remaining_s: f64,
}

/// Simulates one day of traces under one policy.
pub fn simulate_day(
    scenario: &Scenario,
    day: &Day,
    policy: &Policy,
    seed: u64,
) -> Result<DayResult, SimError> {
    let interval = scenario.simulation.interval_s;
    let (hosts, models) = build_hosts(scenario);
    let vms = build_vms(scenario, day.utilization.len());
    let power_aware = !matches!(policy, Policy::Npa);
    let mut vm_host = initial_placement(&hosts, &models, &vms, policy, day, scenario)?;

    let mig = &scenario.migration;
    let time_model: Box<dyn MigrationTime> = if mig.model == "precopy" {
        Box::new(PreCopy {
            default_dirty_rate_mb_s: mig.dirty_rate_mb_s,
            max_rounds: mig.max_rounds,
            stop_copy_mb: mig.stop_copy_mb,
        })
    } else {
        Box::new(MemoryOverBandwidth)
    };

    let mut manager = match policy {
        Policy::Managed { selector, .. } => {
            let ms = &scenario.manager;
            let detector = policy
                .detector(ms.fallback_threshold, ms.sandpiper_k, ms.sandpiper_n)
                .expect("managed policy has a detector");
            let pattern = match ms.pattern.as_str() {
                "balance" => Pattern::Balance,
                "auto" => Pattern::Auto {
                    consolidate_below: ms.consolidate_below,
                    balance_above: ms.balance_above,
                    dwell: ms.dwell,
                },
                _ => Pattern::Consolidate,
            };
            let config = Config {
                detector,
                selector: *selector,
                pattern,
                coldspot_below: ms.coldspot_below,
                limits: MigrationLimits {
                    per_host: ms.max_migrations_per_host,
                    per_cluster: ms.max_migrations_per_cluster,
                    vm_cooldown_s: ms.vm_cooldown_s,
                },
            };
            let engine_err = |e| SimError::Engine {
                day: day.name.clone(),
                source: e,
            };
            Some(Manager::new(config, seed).map_err(engine_err)?)
        }
        _ => None,
    };

    let mut snap = PoolView {
        time_s: 0.0,
        interval_s: interval,
        migration_bw_share: mig.bandwidth_share,
        default_bandwidth_mbps: 1000.0,
        power_models: models.clone(),
        hosts: hosts
            .iter()
            .enumerate()
            .map(|(i, h)| HostInfo {
                id: i as u64,
                cpu_capacity: h.capacity,
                core_capacity: h.core_mips,
                ram_mb: if scenario.simulation.enforce_ram {
                    h.ram
                } else {
                    f64::INFINITY
                },
                net_mbps: h.bw_mbps,
                cpu_overhead: 0.0,
                power_model: h.model,
                on: false,
            })
            .collect(),
        vms: vms
            .iter()
            .enumerate()
            .map(|(i, v)| VmInfo {
                id: i as u64,
                host: 0,
                cpu_size: v.mips,
                cores: v.cores,
                cpu_demand: 0.0,
                ram_mb: v.ram,
                net_mbps: 0.0,
                history: Vec::with_capacity(cluster::HISTORY_LEN),
                migrating_to: None,
                dirty_rate_mb_s: None,
            })
            .collect(),
    };

    let nh = hosts.len();
    let nv = vms.len();
    let degradation = mig.degradation;
    let mut inflight: Vec<Option<InFlight>> = vec![None; nv];
    let mut demand = vec![0.0; nv];
    let mut energy_j = 0.0;
    let mut active_s = vec![0.0; nh];
    let mut violation_s = vec![0.0; nh];
    let mut vm_requested = vec![0.0; nv];
    let mut vm_degraded = vec![0.0; nv];
    let mut migrations = 0u64;
    let mut hotspot_migrations = 0u64;
    let mut shutdowns = 0u64;
    let mut imbalance_sum = 0.0;
    let mut active_host_s = 0.0;

    // Per-interval buffers.
    let mut static_cpu = vec![0.0; nh];
    let mut static_vms = vec![0u32; nh];
    let mut static_core_viol = vec![0u32; nh];
    let mut touching: Vec<Vec<usize>> = vec![Vec::new(); nh];
    let mut was_active = vec![false; nh];
    for &h in &vm_host {
        was_active[h] = true;
    }
    let mut utils = Vec::with_capacity(nh);
    let mut cuts: Vec<f64> = Vec::new();
    let mut active = vec![false; nh];

    let capped =
        |d: f64, v: &VmSpec, h: &HostSpec| d.min(h.core_mips * v.cores.min(h.cores) as f64);

    for t in 0..scenario.simulation.samples_per_day {
        for v in 0..nv {
            demand[v] = day.utilization[v][t] * vms[v].mips;
        }
        if let Some(m) = manager.as_mut() {
            snap.time_s = t as f64 * interval;
            for h in snap.hosts.iter_mut() {
                h.on = false;
            }
            for v in 0..nv {
                let info = &mut snap.vms[v];
                info.host = vm_host[v];
                info.cpu_demand = demand[v];
                info.history.clear();
                let from = (t + 1).saturating_sub(cluster::HISTORY_LEN);
                info.history
                    .extend_from_slice(&day.utilization[v][from..=t]);
                info.migrating_to = inflight[v].map(|f| f.to);
                snap.hosts[vm_host[v]].on = true;
                if let Some(f) = inflight[v] {
                    snap.hosts[f.to].on = true;
                }
            }
            let plan = m.decide(&snap).map_err(|e| SimError::Engine {
                day: day.name.clone(),
                source: e,
            })?;
            for d in &plan.migrations {
                let bw = snap.migration_bandwidth_mb_s(d.from, d.to);
                let dur = time_model.duration_s(vms[d.vm].ram, bw, snap.vms[d.vm].dirty_rate_mb_s);
                inflight[d.vm] = Some(InFlight {
                    to: d.to,
                    remaining_s: dur,
                });
                migrations += 1;
                hotspot_migrations += (d.reason == cluster::Reason::Hotspot) as u64;
            }
        }

        // Loads that do not change within the interval.
        static_cpu.fill(0.0);
        static_vms.fill(0);
        static_core_viol.fill(0);
        for list in touching.iter_mut() {
            list.clear();
        }
        for v in 0..nv {
            vm_requested[v] += demand[v] * interval;
            let h = vm_host[v];
            if let Some(f) = inflight[v] {
                touching[h].push(v);
                touching[f.to].push(v);
                let c = f.remaining_s.min(interval);
                vm_degraded[v] += degradation * demand[v] * c;
            } else {
                let c = capped(demand[v], &vms[v], &hosts[h]);
                static_cpu[h] += c;
                static_vms[h] += 1;
                if c < demand[v] - 1e-9 {
                    static_core_viol[h] += 1;
                }
            }
        }

        utils.clear();
        for h in 0..nh {
            let spec = &hosts[h];
            let model = &models[spec.model];
            // Piecewise-constant segments split at migration completions.
            cuts.clear();
            cuts.extend(
                touching[h]
                    .iter()
                    .map(|&v| inflight[v].expect("touching VMs are in flight").remaining_s)
                    .filter(|c| *c < interval),
            );
            cuts.push(interval);
            cuts.sort_by(f64::total_cmp);
            cuts.dedup();
            let mut start = 0.0;
            for &end in &cuts {
                let mut cpu = static_cpu[h];
                let mut present = static_vms[h];
                let mut core_viol = static_core_viol[h];
                for &v in &touching[h] {
                    let f = inflight[v].expect("in flight");
                    let done = start >= f.remaining_s;
                    let c = capped(demand[v], &vms[v], spec);
                    let violated = c < demand[v] - 1e-9;
                    if vm_host[v] == h {
                        if !done {
                            cpu += c;
                            present += 1;
                            core_viol += violated as u32;
                        }
                    } else {
                        present += 1;
                        if done {
                            cpu += c;
                            core_viol += violated as u32;
                        } else {
                            cpu += degradation * demand[v];
                        }
                    }
                }
                let dt = end - start;
                let on = !power_aware || present > 0;
                if on {
                    let u = (cpu / spec.capacity).min(1.0);
                    energy_j += if power_aware {
                        model.power(u)
                    } else {
                        model.max()
                    } * dt;
                    active_s[h] += dt;
                    active_host_s += dt;
                    if cpu > spec.capacity + 1e-9 || core_viol > 0 {
                        violation_s[h] += dt;
                    }
                    if start == 0.0 {
                        utils.push(cpu / spec.capacity);
                    }
                }
                start = end;
            }
        }
        imbalance_sum += cluster::stats::std_dev(&utils);

        // Finish migrations; switched-off hosts are those that became empty.
        for v in 0..nv {
            if let Some(f) = inflight[v].as_mut() {
                if f.remaining_s <= interval {
                    vm_host[v] = f.to;
                    inflight[v] = None;
                } else {
                    f.remaining_s -= interval;
                }
            }
        }
        if power_aware {
            active.fill(false);
            for v in 0..nv {
                active[vm_host[v]] = true;
                if let Some(f) = inflight[v] {
                    active[f.to] = true;
                }
            }
            for h in 0..nh {
                if was_active[h] && !active[h] {
                    shutdowns += 1;
                }
            }
            std::mem::swap(&mut was_active, &mut active);
        }
    }

    let mut slatah_sum = 0.0;
    let mut slatah_n = 0usize;
    for h in 0..nh {
        if active_s[h] > 0.0 {
            slatah_sum += violation_s[h] / active_s[h];
            slatah_n += 1;
        }
    }
    let slatah = if slatah_n > 0 {
        slatah_sum / slatah_n as f64
    } else {
        0.0
    };
    let mut pdm_sum = 0.0;
    let mut pdm_n = 0usize;
    for v in 0..nv {
        if vm_requested[v] > 0.0 {
            pdm_sum += vm_degraded[v] / vm_requested[v];
            pdm_n += 1;
        }
    }
    let pdm = if pdm_n > 0 {
        pdm_sum / pdm_n as f64
    } else {
        0.0
    };
    let energy_kwh = energy_j / 3.6e6;
    let slav = slatah * pdm;
    let day_s = scenario.simulation.samples_per_day as f64 * interval;
    Ok(DayResult {
        policy: policy.name(),
        day: day.name.clone(),
        hosts: nh,
        vms: nv,
        energy_kwh,
        slatah,
        pdm,
        slav,
        esv: energy_kwh * slav,
        migrations,
        hotspot_migrations,
        host_shutdowns: shutdowns,
        mean_active_hosts: active_host_s / day_s,
        load_imbalance: imbalance_sum / scenario.simulation.samples_per_day as f64,
    })
}

/// Hosts in the order CloudSim creates them: types interleaved (host i is
/// of type i mod #types) while every type still has hosts left.
fn build_hosts(s: &Scenario) -> (Vec<HostSpec>, Vec<PowerModel>) {
    let models: Vec<PowerModel> = s
        .host_types
        .iter()
        .map(|t| PowerModel::new(t.power_watts.clone()).expect("validated"))
        .collect();
    let mut left: Vec<usize> = s.host_types.iter().map(|t| t.count).collect();
    let mut hosts = Vec::with_capacity(s.host_count());
    while left.iter().any(|c| *c > 0) {
        for (i, t) in s.host_types.iter().enumerate() {
            if left[i] > 0 {
                left[i] -= 1;
                hosts.push(HostSpec {
                    cores: t.cores,
                    core_mips: t.mips_per_core,
                    capacity: t.mips_per_core * t.cores as f64,
                    ram: t.ram_mb,
                    bw_mbps: t.bandwidth_mbps,
                    model: i,
                });
            }
        }
    }
    (hosts, models)
}

/// VM i gets type i / ceil(n / #types), as CloudSim's `Helper.createVmList`.
fn build_vms(s: &Scenario, n: usize) -> Vec<VmSpec> {
    let types = s.vm_types.len();
    let block = n.div_ceil(types).max(1);
    (0..n)
        .map(|i| {
            let k = (i / block).min(types - 1);
            let t = &s.vm_types[k];
            VmSpec {
                mips: t.mips,
                cores: t.cores,
                ram: t.ram_mb,
                vm_type: k,
            }
        })
        .collect()
}

/// Initial placement, reserving each VM's full size: first fit for the
/// baselines (CloudSim's `PowerVmAllocationPolicySimple`), power-aware best
/// fit for the managed policies.
fn initial_placement(
    hosts: &[HostSpec],
    models: &[PowerModel],
    vms: &[VmSpec],
    policy: &Policy,
    day: &Day,
    s: &Scenario,
) -> Result<Vec<usize>, SimError> {
    let mut cpu = vec![0.0; hosts.len()];
    let mut ram = vec![0.0; hosts.len()];
    let mut out = Vec::with_capacity(vms.len());
    let first_fit = matches!(policy, Policy::Npa | Policy::Dvfs);
    for (i, v) in vms.iter().enumerate() {
        let fits = |h: usize| {
            let spec = &hosts[h];
            v.cores <= spec.cores
                && v.mips <= spec.core_mips * v.cores as f64 + 1e-9
                && cpu[h] + v.mips <= spec.capacity + 1e-9
                && ram[h] + v.ram <= spec.ram + 1e-9
        };
        let chosen = if first_fit {
            (0..hosts.len()).find(|&h| fits(h))
        } else {
            let mut best: Option<(f64, usize)> = None;
            for h in 0..hosts.len() {
                if !fits(h) {
                    continue;
                }
                let m = &models[hosts[h].model];
                let after = m.power((cpu[h] + v.mips) / hosts[h].capacity);
                let now = if cpu[h] > 0.0 {
                    m.power(cpu[h] / hosts[h].capacity)
                } else {
                    0.0
                };
                let delta = after - now;
                if best.is_none_or(|(b, _)| delta < b) {
                    best = Some((delta, h));
                }
            }
            best.map(|(_, h)| h)
        };
        let Some(h) = chosen else {
            return Err(SimError::NoRoom {
                day: day.name.clone(),
                index: i,
                file: day.files[i].clone(),
                vm_type: s.vm_types[v.vm_type].name.clone(),
            });
        };
        cpu[h] += v.mips;
        ram[h] += v.ram;
        out.push(h);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precopy_converges_or_stops() {
        let m = PreCopy {
            default_dirty_rate_mb_s: 0.0,
            max_rounds: 30,
            stop_copy_mb: 50.0,
        };
        // Nothing dirtied: one round plus an empty stop-and-copy.
        assert_eq!(m.duration_s(1000.0, 100.0, None), 10.0);
        // Dirty at 50 MB/s with 100 MB/s: 10 s, then 500 MB (5 s), 250 (2.5),
        // 125 (1.25), 62.5 (0.625) -> 31.25 MB left <= 50: stop-and-copy 0.3125 s.
        let d = m.duration_s(1000.0, 100.0, Some(50.0));
        assert!(
            (d - (10.0 + 5.0 + 2.5 + 1.25 + 0.625 + 0.3125)).abs() < 1e-9,
            "{d}"
        );
        // Not converging (dirty faster than the link): stops, copies the rest.
        let d = m.duration_s(1000.0, 100.0, Some(200.0));
        assert!((d - 20.0).abs() < 1e-9, "{d}");
        assert_eq!(MemoryOverBandwidth.duration_s(870.0, 62.5, None), 13.92);
    }
}
