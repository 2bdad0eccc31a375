//! The modelled data center: hosts and VMs built from a scenario, their
//! initial placement, and the engine's view of them.

use std::collections::{BTreeSet, HashMap};

use cluster::{HISTORY_LEN, HostInfo, PoolView, PowerModel, VmInfo};

use super::SimError;
use crate::policy::Policy;
use crate::scenario::Scenario;
use crate::trace::Day;

/// One host: cores and MIPS, memory (MB), bandwidth, power model index.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostSpec {
    pub cores: u32,
    pub core_mips: f64,
    /// cores x core_mips.
    pub capacity: f64,
    pub ram: f64,
    pub bw_mbps: f64,
    pub model: usize,
}

impl HostSpec {
    /// The CPU a VM asking for `demand` gets here: one host core per VM core at most.
    pub fn cpu_given(&self, demand: f64, vm: &VmSpec) -> f64 {
        demand.min(self.core_mips * vm.cores.min(self.cores) as f64)
    }
}

/// One VM: its size in MIPS and cores, memory (MB), and scenario type index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VmSpec {
    pub mips: f64,
    pub cores: u32,
    pub ram: f64,
    pub vm_type: usize,
}

/// Hosts in the order CloudSim creates them: types interleaved (host i is
/// of type i mod #types) while every type still has hosts left.
pub(crate) fn build_hosts(s: &Scenario) -> (Vec<HostSpec>, Vec<PowerModel>) {
    let models: Vec<PowerModel> = s
        .host_types
        .iter()
        .map(|t| PowerModel::new(t.power_watts.clone()).expect("validated"))
        .collect();
    let mut left: Vec<usize> = s.host_types.iter().map(|t| t.count).collect();
    let mut hosts = Vec::with_capacity(s.host_types.iter().map(|t| t.count).sum());
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
pub(crate) fn build_vms(s: &Scenario, n: usize) -> Vec<VmSpec> {
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
pub(crate) fn initial_placement(
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
    let cloudsim = s.simulation.model == cluster::Model::CloudSim;
    let overcommit = s.simulation.cpu_overcommit;
    // Hosts of one specification with the same reservations are alike: each
    // choice below depends only on those, ties going to the lowest index,
    // so only the lowest-index host of each class is evaluated.
    let mut classes = Classes::new(hosts);
    for (i, v) in vms.iter().enumerate() {
        let reserved = if overcommit == 1.0 {
            v.mips
        } else {
            v.mips / overcommit
        };
        let fits = |h: usize| {
            let spec = &hosts[h];
            v.cores <= spec.cores
                && v.mips <= spec.core_mips * v.cores as f64 + 1e-9
                && cpu[h] + reserved <= spec.capacity + 1e-9
                && ram[h] + v.ram <= spec.ram + 1e-9
        };
        let chosen = if first_fit {
            classes.firsts().filter(|&h| fits(h)).min()
        } else {
            let mut best: Option<(f64, usize)> = None;
            for h in classes.firsts() {
                if !fits(h) {
                    continue;
                }
                let m = &models[hosts[h].model];
                let after = m.power((cpu[h] + reserved) / hosts[h].capacity);
                // CloudSim compares with each host's power at its last
                // measured utilization, which is zero for every host while
                // the VMs are created: its idle power.
                let now = if cloudsim {
                    m.power(0.0)
                } else if cpu[h] > 0.0 {
                    m.power(cpu[h] / hosts[h].capacity)
                } else {
                    0.0
                };
                let delta = after - now;
                // The least increase, lowest index first (a scan in index
                // order keeping the first strictly less).
                if best.is_none_or(|(b, bh)| delta < b || (delta == b && h < bh)) {
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
        let from = classes.key(h, cpu[h], ram[h]);
        cpu[h] += reserved;
        ram[h] += v.ram;
        classes.moved(h, from, classes.key(h, cpu[h], ram[h]));
        out.push(h);
    }
    Ok(out)
}

/// Hosts grouped by specification and reservations (CPU and memory).
struct Classes {
    /// Each host's specification: the first host with the same one.
    spec: Vec<usize>,
    members: HashMap<(usize, u64, u64), BTreeSet<usize>>,
}

impl Classes {
    fn new(hosts: &[HostSpec]) -> Self {
        let mut spec = Vec::with_capacity(hosts.len());
        let mut reps: Vec<usize> = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            let same = reps.iter().copied().find(|&j| hosts[j] == *h);
            spec.push(same.unwrap_or_else(|| {
                reps.push(i);
                i
            }));
        }
        let mut members: HashMap<(usize, u64, u64), BTreeSet<usize>> = HashMap::new();
        for (h, &k) in spec.iter().enumerate() {
            members
                .entry((k, 0f64.to_bits(), 0f64.to_bits()))
                .or_default()
                .insert(h);
        }
        Classes { spec, members }
    }

    fn key(&self, h: usize, cpu: f64, ram: f64) -> (usize, u64, u64) {
        (self.spec[h], cpu.to_bits(), ram.to_bits())
    }

    /// The lowest-index host of each class, in no particular order.
    fn firsts(&self) -> impl Iterator<Item = usize> + '_ {
        self.members.values().filter_map(|m| m.first().copied())
    }

    fn moved(&mut self, h: usize, from: (usize, u64, u64), to: (usize, u64, u64)) {
        if let Some(m) = self.members.get_mut(&from) {
            m.remove(&h);
            if m.is_empty() {
                self.members.remove(&from);
            }
        }
        self.members.entry(to).or_default().insert(h);
    }
}

/// The engine's view of the data center before the first interval: every
/// host off, every VM on host 0 with no demand (`DaySimulation` fills them in).
pub(crate) fn pool_view(
    s: &Scenario,
    hosts: &[HostSpec],
    models: &[PowerModel],
    vms: &[VmSpec],
) -> PoolView {
    PoolView {
        time_s: 0.0,
        interval_s: s.simulation.interval_s,
        migration_bw_share: s.migration.bandwidth_share,
        default_bandwidth_mbps: 1000.0,
        power_models: models.to_vec(),
        hosts: hosts
            .iter()
            .enumerate()
            .map(|(i, h)| HostInfo {
                id: i as u64,
                cpu_capacity: h.capacity,
                core_capacity: h.core_mips,
                ram_mb: if s.simulation.enforce_ram {
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
                history: Vec::with_capacity(HISTORY_LEN),
                migrating_to: None,
                dirty_rate_mb_s: None,
            })
            .collect(),
    }
}
