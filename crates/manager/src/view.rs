//! The pool as the agents report it, turned into one interval's
//! `cluster::PoolView`. Reports that cannot be trusted are left out with
//! one line saying why (malformed, stale, impossible loads), so no order
//! is ever issued on them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use agent::{HostReport, OrderView};
use api::types::vm_state;
use cluster::{HISTORY_LEN, HostInfo, PoolView, PowerModel, VmInfo};

/// A host's load may exceed its quota a little (accounting granularity);
/// beyond this factor the report is impossible.
const LOAD_SLACK: f64 = 1.5;
/// Manager intervals without a new report after which a host is stale
/// (its agent holds its lease but does not measure).
const STALE_INTERVALS: u32 = 3;
/// Reports timed this far from the manager's clock are logged as skewed
/// (times are not used for decisions, so skew is only reported).
const SKEW_WARN_MS: u64 = 30_000;

/// What the manager keeps across intervals about the reports.
#[derive(Default)]
pub struct Monitor {
    /// By host: the revision of its last report and for how many
    /// intervals it has not changed.
    seen: HashMap<String, (i64, u32)>,
    /// By VM name: its utilization history (fractions of its size).
    history: HashMap<String, VecDeque<f64>>,
}

/// One interval's view, with the names behind its indices.
pub struct Pool {
    pub view: PoolView,
    /// Host names by index in the view.
    pub hosts: Vec<String>,
    /// VM names by index in the view.
    pub vms: Vec<String>,
    /// Why reports or VMs were left out (one line each).
    pub skipped: Vec<String>,
}

/// The parts of the view that do not come from reports.
#[derive(Debug, Clone)]
pub struct ViewSettings {
    pub interval_s: f64,
    /// Memory assumed for a host whose agent does not report it, MB.
    pub host_ram_mb: f64,
    /// Bandwidth between hosts, Mbit/s.
    pub bandwidth_mbps: f64,
}

/// A stable id for a VM name (cooldowns are kept by id): FNV-1a.
pub fn vm_id(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Monitor {
    /// Builds the view from the reports under `/ferry/hosts/` and the
    /// orders still running (their VMs are in flight).
    pub fn build(
        &mut self,
        kvs: &[store::KeyValue],
        running: &BTreeMap<String, OrderView>,
        settings: &ViewSettings,
        time_s: f64,
        now_ms: u64,
    ) -> Pool {
        let mut skipped = Vec::new();
        let mut reports = Vec::new();
        let mut live = HashMap::new();
        let mut keep: HashSet<String> = HashSet::new();
        for kv in kvs {
            let name = kv
                .key
                .strip_prefix(agent::report::HOSTS_PREFIX)
                .unwrap_or(&kv.key);
            let report = match serde_json::from_slice::<HostReport>(&kv.value) {
                Ok(r) if r.host == name => r,
                Ok(r) => {
                    skipped.push(format!("host {name}: the report names host '{}'", r.host));
                    continue;
                }
                Err(e) => {
                    skipped.push(format!("host {name}: malformed report: {e}"));
                    continue;
                }
            };
            let entry = self.seen.entry(name.to_string()).or_insert((0, 0));
            *entry = if entry.0 == kv.mod_revision {
                (kv.mod_revision, entry.1 + 1)
            } else {
                (kv.mod_revision, 0)
            };
            let fresh = entry.1 == 0;
            live.insert(name.to_string(), ());
            keep.extend(report.vms.iter().map(|v| v.name.clone()));
            if entry.1 >= STALE_INTERVALS {
                skipped.push(format!(
                    "host {name}: stale, its report has not changed for {} intervals",
                    entry.1
                ));
                continue;
            }
            if now_ms.abs_diff(report.unix_ms) > SKEW_WARN_MS {
                tracing::debug!(
                    host = name,
                    "report time {} ms from the manager's clock",
                    now_ms.abs_diff(report.unix_ms)
                );
            }
            match check(&report) {
                Ok(()) => reports.push((report, fresh)),
                Err(why) => skipped.push(format!("host {name}: {why}")),
            }
        }
        self.seen.retain(|h, _| live.contains_key(h));
        let hosts: Vec<String> = reports.iter().map(|(r, _)| r.host.clone()).collect();
        let index: HashMap<&str, usize> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.as_str(), i))
            .collect();
        let in_flight: HashMap<&str, &str> = running
            .values()
            .filter_map(|v| v.order.as_ref())
            .map(|o| (o.vm.as_str(), o.to.as_str()))
            .collect();
        let mut view = PoolView {
            time_s,
            interval_s: settings.interval_s,
            migration_bw_share: 1.0,
            default_bandwidth_mbps: settings.bandwidth_mbps,
            power_models: vec![PowerModel::hp_ml110_g4()],
            ..PoolView::default()
        };
        let mut vms = Vec::new();
        let mut owners: HashMap<String, usize> = HashMap::new();
        let mut dups: HashSet<String> = HashSet::new();
        for (h, (r, fresh)) in reports.iter().enumerate() {
            let mut vm_load = 0.0;
            for v in &r.vms {
                // An arriving VM is counted on its source until it arrives.
                if v.state == vm_state::INCOMING
                    || v.state == vm_state::EXITED
                    || v.state == vm_state::MIGRATED
                {
                    continue;
                }
                if let Some(other) = owners.insert(v.name.clone(), h) {
                    skipped.push(format!(
                        "VM {}: reported by hosts {} and {}",
                        v.name, hosts[other], r.host
                    ));
                    dups.insert(v.name.clone());
                    continue;
                }
                let size = f64::from(v.vcpus);
                let demand = v.load_cpus.unwrap_or(0.0);
                vm_load += demand;
                let history = self.history.entry(v.name.clone()).or_default();
                // One sample per report, however often it is read.
                if *fresh || history.is_empty() {
                    history.push_back((demand / size).clamp(0.0, 1.0));
                }
                while history.len() > HISTORY_LEN {
                    history.pop_front();
                }
                view.vms.push(VmInfo {
                    id: vm_id(&v.name),
                    host: h,
                    cpu_size: size,
                    cores: v.vcpus,
                    cpu_demand: demand,
                    ram_mb: v.memory_bytes as f64 / (1024.0 * 1024.0),
                    net_mbps: 0.0,
                    history: history.iter().copied().collect(),
                    migrating_to: in_flight
                        .get(v.name.as_str())
                        .and_then(|to| index.get(to).copied()),
                    dirty_rate_mb_s: v.dirty_rate_bytes_per_second.map(|b| b as f64 / 1e6),
                });
                vms.push(v.name.clone());
            }
            view.hosts.push(HostInfo {
                id: h as u64,
                cpu_capacity: r.capacity_cpus,
                core_capacity: 1.0,
                ram_mb: r
                    .memory_bytes
                    .map_or(settings.host_ram_mb, |b| b as f64 / (1024.0 * 1024.0)),
                net_mbps: 0.0,
                cpu_overhead: (r.load_cpus.unwrap_or(0.0) - vm_load).max(0.0),
                power_model: 0,
                on: !r.switched_off,
            });
        }
        // A VM named by two hosts cannot be placed: leave both copies out.
        for i in (0..vms.len()).rev() {
            if dups.contains(&vms[i]) {
                view.vms.remove(i);
                vms.remove(i);
            }
        }
        // Histories of VMs still reported (stale hosts' too) are kept.
        self.history.retain(|name, _| keep.contains(name));
        Pool {
            view,
            hosts,
            vms,
            skipped,
        }
    }
}

/// Whether a report's numbers are possible.
fn check(r: &HostReport) -> Result<(), String> {
    let cap = r.capacity_cpus;
    if !(cap.is_finite() && cap > 0.0) {
        return Err(format!("impossible capacity {cap}"));
    }
    if r.memory_bytes == Some(0) {
        return Err("impossible memory 0 bytes".into());
    }
    let Some(load) = r.load_cpus else {
        return Err("no load measured yet".into());
    };
    if !(load.is_finite() && load >= 0.0 && load <= cap * LOAD_SLACK) {
        return Err(format!(
            "impossible load {load} CPUs for a capacity of {cap}"
        ));
    }
    for v in &r.vms {
        let size = f64::from(v.vcpus);
        if v.vcpus == 0 {
            return Err(format!("VM {} has no vCPU", v.name));
        }
        if let Some(l) = v.load_cpus
            && !(l.is_finite() && l >= 0.0 && l <= size * LOAD_SLACK)
        {
            return Err(format!(
                "impossible load {l} CPUs for VM {} of {} vCPUs",
                v.name, v.vcpus
            ));
        }
    }
    Ok(())
}
