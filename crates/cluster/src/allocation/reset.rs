//! The allocation rebuilt from a view at the start of each interval.

use super::{Allocation, HostSearch, Reads, given};
use crate::config::Config;
use crate::detect::Detector;
use crate::model::{HISTORY_LEN, PoolView};

impl Allocation {
    /// Starts an interval from the allocation in `view`; a VM in flight
    /// occupies both its source and its destination. The structure
    /// `search` needs is built and kept current (with the buckets and
    /// LR's detector, each host's LR line too); the histories `config`'s
    /// detector and selector read are kept, no others.
    pub fn reset(&mut self, view: &PoolView, search: HostSearch, config: &Config) {
        self.search = HostSearch::Scan;
        self.reads = Reads::of(config);
        let reads = self.reads;
        let nh = view.hosts.len();
        self.find_kinds(view);
        self.vm_hist.clear();
        self.vm_hist_len.clear();
        for v in view.vms.iter().filter(|_| reads.vms) {
            let mut a = [0.0; HISTORY_LEN];
            let n = v.history.len().min(HISTORY_LEN);
            for (i, x) in v.history.iter().rev().take(n).enumerate() {
                a[i] = *x;
            }
            self.vm_hist.push(a);
            self.vm_hist_len.push(n);
        }
        self.host_vms.resize_with(nh, Vec::new);
        self.host_vms.truncate(nh);
        for l in self.host_vms.iter_mut() {
            l.clear();
        }
        for v in [&mut self.cpu, &mut self.ram, &mut self.net, &mut self.given] {
            v.clear();
            v.resize(nh, 0.0);
        }
        self.reserved_in.clear();
        self.reserved_in.resize(nh, 0);
        self.longest_s.clear();
        self.longest_s.resize(nh, 0.0);
        // Filled below once the loads are known (`add` skips it until then).
        self.power_now.clear();
        self.hist.clear();
        if reads.hosts {
            self.hist.resize(nh, [0.0; HISTORY_LEN]);
        }
        for (h, info) in view.hosts.iter().enumerate() {
            self.cpu[h] = info.cpu_overhead;
        }
        for (i, v) in view.vms.iter().enumerate() {
            self.add(view, i, v.host);
            if let Some(d) = v.migrating_to {
                self.cpu[d] += v.cpu_demand;
                self.given[d] += given(view, i, d);
                self.ram[d] += v.ram_mb;
                self.net[d] += v.net_mbps;
                self.reserved_in[d] += 1;
            }
        }
        self.base_util.clear();
        self.base_power.clear();
        for (h, info) in view.hosts.iter().enumerate() {
            let u = (self.given[h] + info.cpu_overhead) / info.cpu_capacity;
            self.base_util.push(u.min(1.0));
            let power = &view.power_models[info.power_model];
            self.base_power.push(power.power(self.base_util[h]));
            self.power_now.push(power.power(self.util(view, h)));
        }
        self.hidden.clear();
        self.hidden.resize(nh, false);
        match search {
            HostSearch::Scan => {}
            HostSearch::Buckets => {
                let caps: Vec<f64> = self
                    .reps
                    .iter()
                    .map(|&r| view.hosts[r].cpu_capacity)
                    .collect();
                let keep_lr = matches!(config.detector, Detector::Lr { .. });
                self.buckets.reset(&self.kind, &caps, keep_lr);
                for h in 0..nh {
                    if self.active(h) {
                        let lr = keep_lr.then(|| self.lr_host(view, h));
                        self.buckets
                            .set(h, Some((self.cpu[h], self.power_now[h])), lr);
                    }
                }
            }
            HostSearch::Tolerant => {
                let load = (0..nh)
                    .map(|h| self.active(h).then(|| self.util(view, h)))
                    .collect();
                self.index.build(&self.kind, self.kinds, load);
            }
        }
        self.search = search;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Model;
    use crate::limits::MigrationLimits;
    use crate::model::{HostInfo, PowerModel, VmInfo};
    use crate::pattern::Pattern;
    use crate::select::Selector;

    fn config(detector: Detector) -> Config {
        Config {
            detector,
            selector: Selector::MinMigrationTime,
            pattern: Pattern::Consolidate,
            coldspot_below: None,
            limits: MigrationLimits::default(),
            model: Model::Ferry,
            tie_tolerance_w: 0.0,
        }
    }

    fn lr() -> Config {
        config(Detector::Lr {
            safety: 1.2,
            fallback: 0.7,
        })
    }

    /// A pool whose VMs share hosts in an interleaved order, some in
    /// flight (to a host that also holds VMs), histories of mixed lengths.
    fn pool() -> PoolView {
        let host = |i: u64| HostInfo {
            id: i,
            cpu_capacity: 1860.0 * 2.0 + i as f64 * 139.0,
            core_capacity: 1860.0,
            ram_mb: 4096.0,
            net_mbps: 1000.0,
            cpu_overhead: i as f64 * 3.7,
            power_model: (i % 2) as usize,
            on: true,
        };
        let vm = |i: u64| {
            let n = (i as usize * 7) % 34;
            VmInfo {
                id: 100 + i,
                host: (i as usize * 5) % 7,
                cpu_size: 500.0 + 250.0 * (i % 4) as f64,
                cores: 1,
                cpu_demand: 0.1 + 0.37 * i as f64,
                ram_mb: 613.0 + (i % 3) as f64 * 317.0,
                net_mbps: 0.3 * i as f64,
                history: (0..n)
                    .map(|k| ((k * 13 + i as usize) % 17) as f64 / 17.3)
                    .collect(),
                migrating_to: (i % 4 == 1).then_some((i as usize * 3 + 1) % 7),
                dirty_rate_mb_s: None,
            }
        };
        PoolView {
            time_s: 0.0,
            interval_s: 300.0,
            migration_bw_share: 0.5,
            default_bandwidth_mbps: 1000.0,
            power_models: vec![PowerModel::hp_ml110_g4(), PowerModel::hp_ml110_g5()],
            hosts: (0..7).map(host).collect(),
            vms: (0..23).map(vm).collect(),
        }
    }

    #[test]
    fn only_the_histories_the_plan_reads_are_kept() {
        let view = pool();
        let (mut thr, mut with_lr) = (Allocation::default(), Allocation::default());
        with_lr.reset(&view, HostSearch::Scan, &lr());
        thr.reset(&view, HostSearch::Scan, &lr());
        thr.reset(
            &view,
            HostSearch::Scan,
            &config(Detector::Threshold { threshold: 0.8 }),
        );
        assert!(thr.hist.is_empty() && thr.vm_hist.is_empty());
        assert!(with_lr.hist.iter().any(|h| h[0] > 0.0));
        let bits = |x: &[f64]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&thr.cpu), bits(&with_lr.cpu));
        assert_eq!(bits(&thr.power_now), bits(&with_lr.power_now));
        assert_eq!(thr.host_vms, with_lr.host_vms);
        // Moves keep working without them.
        let v = thr.host_vms[0][0];
        thr.remove(&view, v, 0);
        thr.add(&view, v, 1);
        assert!(thr.hist.is_empty());
        // A selector that reads VMs' histories keeps those alone.
        let mut mc = config(Detector::Threshold { threshold: 0.8 });
        mc.selector = Selector::MaxCorrelation;
        thr.reset(&view, HostSearch::Scan, &mc);
        assert!(thr.hist.is_empty());
        assert_eq!(thr.vm_history(3), with_lr.vm_history(3));
    }
}
