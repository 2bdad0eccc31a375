//! The tentative allocation while a plan is built: which VMs each host
//! holds, its CPU, memory and network load and its utilization history,
//! updated as VMs are moved on paper. Its buffers live in the `Manager`
//! between intervals so planning does not allocate.

use crate::buckets::LoadBuckets;
use crate::config::{Config, Model};
use crate::detect::{Detector, HostLoad, LR_WINDOW};
use crate::index::HostIndex;
use crate::lr_line::{self, LrHost, LrLine};
use crate::model::{HISTORY_LEN, PoolView};
use crate::select::Candidate;

mod reset;

/// How power-aware placement finds its host this interval
/// (docs/MANAGER.md, "Placement").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum HostSearch {
    /// Every candidate host evaluated (small pools, the CloudSim model).
    #[default]
    Scan,
    /// The exact rule through hosts bucketed by load (`LoadBuckets`).
    Buckets,
    /// The tie tolerance's rule through the host index (`HostIndex`).
    Tolerant,
}

impl HostSearch {
    /// Pools from this many hosts keep the buckets: below, scanning every
    /// candidate costs less than keeping them (docs/BENCHMARKS.md, "Scale").
    pub const BUCKETS_FROM_HOSTS: usize = 2_000;

    /// The search for `config` on a pool of `hosts`. Ferry's model keeps a
    /// structure (the tolerance's index, or on large pools the exact rule's
    /// buckets: the same choices as the scan); the CloudSim model's
    /// increase is not a function of the load alone, so it scans.
    pub fn choose(config: &Config, hosts: usize) -> Self {
        match config.model {
            Model::CloudSim => HostSearch::Scan,
            Model::Ferry if config.tie_tolerance_w > 0.0 => HostSearch::Tolerant,
            Model::Ferry if hosts >= Self::BUCKETS_FROM_HOSTS => HostSearch::Buckets,
            Model::Ferry => HostSearch::Scan,
        }
    }
}

/// The utilization histories a plan reads: the allocation keeps only
/// those (on large pools, summing hosts' histories that no one reads was
/// a tenth of THR's time; docs/BENCHMARKS.md, "Scale").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reads {
    /// Hosts' histories: every detector but THR's reads them.
    pub hosts: bool,
    /// VMs' histories: to sum the hosts' or for a selector that reads them.
    pub vms: bool,
}

impl Reads {
    pub fn of(config: &Config) -> Self {
        let hosts = !matches!(config.detector, Detector::Threshold { .. });
        Reads {
            hosts,
            vms: hosts || config.selector.reads_history(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Allocation {
    /// VM indices on each host (sources of in-flight migrations included).
    host_vms: Vec<Vec<usize>>,
    cpu: Vec<f64>,
    ram: Vec<f64>,
    net: Vec<f64>,
    /// Each host's utilization history, newest first (see `HostLoad`),
    /// when `reads` says the plan reads it (else empty).
    hist: Vec<[f64; HISTORY_LEN]>,
    /// Each VM's history, newest first, and how much of it is filled, when
    /// `reads` says the plan reads them (else empty).
    vm_hist: Vec<[f64; HISTORY_LEN]>,
    vm_hist_len: Vec<usize>,
    /// The histories this interval's plan reads.
    reads: Reads,
    /// VMs migrating in to each host.
    reserved_in: Vec<u32>,
    /// The longest time one of each host's VMs would take to leave it
    /// (what the regressions look ahead by).
    longest_s: Vec<f64>,
    /// CPU the host's VMs are given: each one's demand capped by its cores
    /// (CloudSim's allocated MIPS; the CloudSim model's fit and power use it).
    given: Vec<f64>,
    /// Utilization before this plan, as given (at most 1): what CloudSim's
    /// `host.getPower()` and coldspot order use.
    base_util: Vec<f64>,
    /// Power at the planned load (Ferry's placement) and before this plan
    /// (CloudSim's), kept so placement computes one power per candidate.
    power_now: Vec<f64>,
    base_power: Vec<f64>,
    /// Hosts with the same specification share a kind: all empty hosts of a
    /// kind are interchangeable, so placement evaluates only the first.
    kind: Vec<usize>,
    kinds: usize,
    /// The lowest-index host of each kind.
    reps: Vec<usize>,
    /// Hosts with VMs by kind and planned load, kept current for the
    /// search in use (`HostSearch`).
    index: HostIndex,
    buckets: LoadBuckets,
    search: HostSearch,
    /// Hosts taken out of the index for the rest of the plan.
    hidden: Vec<bool>,
}

impl Allocation {
    /// The host index, when this interval keeps one.
    pub fn index(&self) -> Option<&HostIndex> {
        (self.search == HostSearch::Tolerant).then_some(&self.index)
    }

    /// The load buckets, when this interval keeps them.
    pub fn buckets(&self) -> Option<&LoadBuckets> {
        (self.search == HostSearch::Buckets).then_some(&self.buckets)
    }

    /// Keeps host `h`'s entry in the search structure current.
    fn reindex(&mut self, view: &PoolView, h: usize) {
        if self.search == HostSearch::Scan || self.hidden[h] {
            return;
        }
        let active = self.active(h);
        match self.search {
            HostSearch::Scan => {}
            HostSearch::Buckets => {
                let now = active.then(|| (self.cpu[h], self.power_now[h]));
                let lr = (active && self.buckets.keeps_lr()).then(|| self.lr_host(view, h));
                self.buckets.set(h, now, lr);
            }
            HostSearch::Tolerant => self.index.set(h, active.then(|| self.util(view, h))),
        }
    }

    /// Takes host `h` out of the search structure for the rest of the
    /// plan: the caller excludes it from every placement left (so searches
    /// do not wade through hosts that can never be chosen).
    pub fn hide(&mut self, h: usize) {
        self.hidden[h] = true;
        match self.search {
            HostSearch::Scan => {}
            HostSearch::Buckets => self.buckets.set(h, None, None),
            HostSearch::Tolerant => self.index.set(h, None),
        }
    }

    /// Keeps `power_now[h]` at the power of `h`'s planned load.
    fn update_power(&mut self, view: &PoolView, h: usize) {
        if let Some(p) = self.power_now.get_mut(h) {
            let host = &view.hosts[h];
            *p = view.power_models[host.power_model].power(self.cpu[h] / host.cpu_capacity);
        }
    }

    fn find_kinds(&mut self, view: &PoolView) {
        self.kind.clear();
        let mut reps: Vec<usize> = Vec::new();
        for (i, h) in view.hosts.iter().enumerate() {
            let same = reps.iter().position(|&r| {
                let o = &view.hosts[r];
                o.power_model == h.power_model
                    && o.cpu_capacity == h.cpu_capacity
                    && o.core_capacity == h.core_capacity
                    && o.ram_mb == h.ram_mb
                    && o.net_mbps == h.net_mbps
            });
            self.kind.push(same.unwrap_or_else(|| {
                reps.push(i);
                reps.len() - 1
            }));
        }
        self.kinds = reps.len();
        self.reps = reps;
    }

    /// Puts VM `v` on host `h`.
    pub fn add(&mut self, view: &PoolView, v: usize, h: usize) {
        let vm = &view.vms[v];
        self.host_vms[h].push(v);
        self.cpu[h] += vm.cpu_demand;
        self.given[h] += given(view, v, h);
        self.ram[h] += vm.ram_mb;
        self.net[h] += vm.net_mbps;
        if self.reads.hosts {
            let w = vm.cpu_size / view.hosts[h].cpu_capacity;
            for i in 0..self.vm_hist_len[v] {
                self.hist[h][i] += self.vm_hist[v][i] * w;
            }
        }
        self.longest_s[h] = self.longest_s[h].max(migration_time(view, v, h));
        self.update_power(view, h);
        self.reindex(view, h);
    }

    /// Takes VM `v` off host `h`.
    pub fn remove(&mut self, view: &PoolView, v: usize, h: usize) {
        let vm = &view.vms[v];
        if let Some(pos) = self.host_vms[h].iter().position(|x| *x == v) {
            self.host_vms[h].remove(pos);
        }
        self.cpu[h] -= vm.cpu_demand;
        self.given[h] -= given(view, v, h);
        self.ram[h] -= vm.ram_mb;
        self.net[h] -= vm.net_mbps;
        if self.reads.hosts {
            let w = vm.cpu_size / view.hosts[h].cpu_capacity;
            for i in 0..self.vm_hist_len[v] {
                self.hist[h][i] -= self.vm_hist[v][i] * w;
            }
        }
        if self.reads.hosts && self.host_vms[h].is_empty() {
            // Avoid rounding residue: an empty host has no history.
            self.hist[h] = [0.0; HISTORY_LEN];
        }
        // The longest time changes only if this VM's was it.
        if !(migration_time(view, v, h) < self.longest_s[h]) {
            self.longest_s[h] =
                (self.host_vms[h].iter()).fold(0.0, |t: f64, &v| t.max(migration_time(view, v, h)));
        }
        self.update_power(view, h);
        self.reindex(view, h);
    }

    /// The VMs host `h` holds.
    pub fn vms_on(&self, h: usize) -> &[usize] {
        &self.host_vms[h]
    }

    /// Whether a VM is migrating in to host `h`.
    pub fn has_arrivals(&self, h: usize) -> bool {
        self.reserved_in[h] > 0
    }

    /// Host has VMs (or VMs arriving): it draws power and counts as active.
    pub fn active(&self, h: usize) -> bool {
        !self.host_vms[h].is_empty() || self.reserved_in[h] > 0
    }

    pub fn util(&self, view: &PoolView, h: usize) -> f64 {
        self.cpu[h] / view.hosts[h].cpu_capacity
    }

    /// Host `h`'s utilization before this plan, as given (at most 1).
    pub fn base_util(&self, h: usize) -> f64 {
        self.base_util[h]
    }

    /// The kind of host `h` (0..kinds()).
    pub fn kind(&self, h: usize) -> usize {
        self.kind[h]
    }

    pub fn kinds(&self) -> usize {
        self.kinds
    }

    /// The lowest-index host of kind `k` (its specification stands for the kind's).
    pub fn rep(&self, k: usize) -> usize {
        self.reps[k]
    }

    /// Runs the detector on host `h` as planned, optionally with VM `extra` added.
    pub fn overloaded(
        &self,
        view: &PoolView,
        detector: &Detector,
        h: usize,
        extra: Option<usize>,
    ) -> bool {
        if self.host_vms[h].is_empty() && self.reserved_in[h] == 0 && extra.is_none() {
            return false;
        }
        let cap = view.hosts[h].cpu_capacity;
        let mut util = self.cpu[h] / cap;
        if let Detector::Threshold { threshold } = *detector {
            // No history needed.
            let extra = extra.map_or(0.0, |v| view.vms[v].cpu_demand / cap);
            return util + extra > threshold;
        }
        debug_assert!(self.reads.hosts, "the detector reads hosts' histories");
        // Only the regressions look ahead by the migration time.
        let needs_time = matches!(detector, Detector::Lr { .. } | Detector::Lrr { .. });
        let mut max_t: f64 = 0.0;
        if needs_time {
            max_t = self.longest_s[h];
            if let Some(verdict) = self.regression_window(view, detector, h, extra, max_t) {
                return verdict;
            }
        }
        let mut scratch = self.hist[h];
        if let Some(v) = extra {
            let vm = &view.vms[v];
            util += vm.cpu_demand / cap;
            let w = vm.cpu_size / cap;
            for i in 0..self.vm_hist_len[v] {
                scratch[i] += self.vm_hist[v][i] * w;
            }
            if needs_time {
                max_t = max_t.max(migration_time(view, v, h));
            }
        }
        let mut len = HISTORY_LEN;
        while len > 0 && scratch[len - 1] == 0.0 {
            len -= 1;
        }
        let load = HostLoad {
            utilization: util,
            history_newest_first: &scratch[..len],
            max_migration_time_s: max_t,
            interval_s: view.interval_s,
        };
        detector
            .quick_verdict(&load)
            .unwrap_or_else(|| detector.is_overloaded(&load))
    }

    /// The regressions' verdict from the newest `LR_WINDOW` values of the
    /// history alone (all they read once the history is that long), when
    /// it is: the verdict `overloaded` gives, without building the whole
    /// history. `max_t`: the longest migration time of the host's VMs.
    fn regression_window(
        &self,
        view: &PoolView,
        detector: &Detector,
        h: usize,
        extra: Option<usize>,
        max_t: f64,
    ) -> Option<bool> {
        let cap = view.hosts[h].cpu_capacity;
        let mut window: [f64; LR_WINDOW] = self.hist[h][..LR_WINDOW].try_into().ok()?;
        let mut util = self.cpu[h] / cap;
        let mut max_t = max_t;
        if let Some(v) = extra {
            let vm = &view.vms[v];
            util += vm.cpu_demand / cap;
            let w = vm.cpu_size / cap;
            for i in 0..self.vm_hist_len[v].min(LR_WINDOW) {
                window[i] += self.vm_hist[v][i] * w;
            }
            max_t = max_t.max(migration_time(view, v, h));
        }
        // A non-zero value at the window's end: the history is at least
        // that long (the full one is cut after its last non-zero value).
        if window[LR_WINDOW - 1] == 0.0 {
            return None;
        }
        let load = HostLoad {
            utilization: util,
            history_newest_first: &window,
            max_migration_time_s: max_t,
            interval_s: view.interval_s,
        };
        Some(
            detector
                .quick_verdict(&load)
                .unwrap_or_else(|| detector.is_overloaded(&load)),
        )
    }

    /// Host `h`'s window as LR's line, and its own look-ahead: what the
    /// buckets keep for LR. The line is `UNKNOWN` unless a value from the
    /// window's oldest on is positive: then, with any VM added (values not
    /// negative), the history is at least a window long and the
    /// regression, not the fallback threshold, decides. When every value
    /// from there on is zero, a VM whose history is zero there too leaves
    /// the history shorter than a window: the fallback decides.
    fn lr_host(&self, view: &PoolView, h: usize) -> LrHost {
        let window: &[f64; LR_WINDOW] = self.hist[h][..LR_WINDOW].try_into().expect("window");
        let oldest = &self.hist[h][LR_WINDOW - 1..];
        let line = if oldest.iter().any(|x| *x > 0.0) {
            LrLine::of(window)
        } else {
            LrLine::UNKNOWN
        };
        LrHost {
            line,
            at: lr_line::look_ahead(self.longest_s[h], view.interval_s),
            zero_tail: oldest.iter().all(|x| *x == 0.0),
        }
    }

    /// VM `v`'s window as LR's line (not yet scaled to a host), and
    /// whether its history is zero from the window's oldest on, when its
    /// history's values are finite and not negative (adding them keeps a
    /// host's positive values positive).
    pub fn vm_lr_line(&self, v: usize) -> Option<(LrLine, bool)> {
        let history = &self.vm_hist[v];
        let window: &[f64; LR_WINDOW] = history[..LR_WINDOW].try_into().ok()?;
        let zero_tail = history[LR_WINDOW - 1..].iter().all(|x| *x == 0.0);
        (history.iter())
            .all(|x| x.is_finite() && *x >= 0.0)
            .then(|| (LrLine::of(window), zero_tail))
    }

    /// Seconds VM `v` would take to leave host `h`.
    pub fn migration_time(&self, view: &PoolView, v: usize, h: usize) -> f64 {
        migration_time(view, v, h)
    }

    /// VM `v`'s history, newest first.
    pub fn vm_history(&self, v: usize) -> &[f64] {
        debug_assert!(self.reads.vms, "VMs' histories are kept");
        &self.vm_hist[v][..self.vm_hist_len[v]]
    }

    /// VM `v` on host `h` as a selector sees it, with `history` as its
    /// history (`vm_history(v)` or a copy of it).
    pub fn candidate<'a>(
        &self,
        view: &PoolView,
        v: usize,
        h: usize,
        history: &'a [f64],
    ) -> Candidate<'a> {
        let vm = &view.vms[v];
        let host = &view.hosts[h];
        Candidate {
            ram_mb: vm.ram_mb,
            utilization: vm.cpu_demand / vm.cpu_size,
            cpu_share: vm.cpu_demand / host.cpu_capacity,
            mem_share: if host.ram_mb > 0.0 {
                vm.ram_mb / host.ram_mb
            } else {
                0.0
            },
            net_share: if host.net_mbps > 0.0 {
                vm.net_mbps / host.net_mbps
            } else {
                0.0
            },
            history_newest_first: history,
        }
    }

    /// Whether VM `v` fits on host `h` as planned: CPU, one core's share,
    /// memory, and network when the host reports it. The CloudSim model
    /// counts the CPU the host's VMs are given, not what they ask.
    pub fn fits(&self, view: &PoolView, v: usize, h: usize, model: Model) -> bool {
        let vm = &view.vms[v];
        let host = &view.hosts[h];
        let eps = 1e-9;
        let used = match model {
            Model::Ferry => self.cpu[h],
            Model::CloudSim => self.given[h].min(host.cpu_capacity),
        };
        used + vm.cpu_demand <= host.cpu_capacity + eps
            && vm.cpu_demand <= host.core_capacity * vm.cores.max(1) as f64 + eps
            && self.ram[h] + vm.ram_mb <= host.ram_mb + eps
            && (host.net_mbps <= 0.0 || self.net[h] + vm.net_mbps <= host.net_mbps + eps)
    }

    /// Host `h`'s utilization with VM `v` added.
    pub fn util_with(&self, view: &PoolView, v: usize, h: usize) -> f64 {
        (self.cpu[h] + view.vms[v].cpu_demand) / view.hosts[h].cpu_capacity
    }

    /// Power increase (W) of putting `v` on `h`. Ferry: from the host's
    /// planned load, and an inactive host adds all of its power, idle
    /// included. CloudSim: the planned power with the VM minus the host's
    /// power before this plan (its idle power when it was off).
    pub fn power_delta(&self, view: &PoolView, v: usize, h: usize, model: Model) -> f64 {
        let host = &view.hosts[h];
        let power = &view.power_models[host.power_model];
        match model {
            Model::Ferry => {
                let after = power.power(self.util_with(view, v, h));
                if self.active(h) {
                    after - self.power_now[h]
                } else {
                    after
                }
            }
            Model::CloudSim => {
                let used = self.given[h].min(host.cpu_capacity);
                let after = (used + view.vms[v].cpu_demand) / host.cpu_capacity;
                power.power(after) - self.base_power[h]
            }
        }
    }
}

/// CPU VM `v` is given on host `h`: its demand, at most one host core per
/// VM core.
fn given(view: &PoolView, v: usize, h: usize) -> f64 {
    let vm = &view.vms[v];
    vm.cpu_demand
        .min(view.hosts[h].core_capacity * vm.cores.max(1) as f64)
}

/// Seconds VM `v` would take to leave host `h` (memory over bandwidth).
fn migration_time(view: &PoolView, v: usize, h: usize) -> f64 {
    view.vms[v].ram_mb / view.migration_bandwidth_mb_s(h, h)
}
