//! The decision engine: one `Manager` per cluster, called once per interval.

use std::collections::HashMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::ClusterError;
use crate::detect::{Detector, HostLoad};
use crate::model::PoolView;
use crate::select::{self, Candidate, Selector};

/// Length of the utilization history the detectors and selectors use
/// (CloudSim's `PowerVm.HISTORY_LENGTH`).
pub const HISTORY_LEN: usize = 30;

/// Where a VM leaving a host goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Power-aware best fit decreasing: the host whose power grows least.
    PowerAware,
    /// The powered-on host with the lowest utilization after the move; an
    /// off host is woken (power-aware choice) only when no on host fits.
    LeastLoaded,
}

/// Which pattern the engine follows (see docs/MANAGER.md for the rule).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// Always consolidate (Beloglazov & Buyya): relieve hotspots with
    /// power-aware placement, then empty coldspots and switch them off.
    Consolidate,
    /// Always balance: relieve hotspots onto the least-loaded hosts; never
    /// empty hosts.
    Balance,
    /// Choose each interval from the pool's load, with hysteresis.
    Auto {
        /// Consolidate when the pool's load is below this...
        consolidate_below: f64,
        /// ...balance when hotspots exist and the load is at least this...
        balance_above: f64,
        /// ...for this many consecutive intervals before switching.
        dwell: u32,
    },
}

/// The mode the engine is in for an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Consolidate,
    Balance,
}

/// MigrationLimits that keep migrations from swamping hosts or ping-ponging.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MigrationLimits {
    /// Most concurrent migrations (in + out) touching one host.
    pub per_host: Option<u32>,
    /// Most concurrent migrations in the cluster.
    pub per_cluster: Option<u32>,
    /// A VM is not moved again until this many seconds after its last move.
    pub vm_cooldown_s: f64,
}

impl Default for MigrationLimits {
    fn default() -> Self {
        Self {
            per_host: None,
            per_cluster: None,
            vm_cooldown_s: 0.0,
        }
    }
}

/// Everything that configures a `Manager`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub detector: Detector,
    pub selector: Selector,
    pub pattern: Pattern,
    /// In consolidate mode, only hosts below this utilization are coldspots;
    /// `None` tries every host, least loaded first (Beloglazov & Buyya).
    pub coldspot_below: Option<f64>,
    pub limits: MigrationLimits,
}

impl Config {
    /// Checks parameter ranges.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let bad = |m: String| Err(ClusterError::Config(m));
        match self.detector {
            Detector::Threshold { threshold } | Detector::Sandpiper { threshold, .. }
                if !(threshold > 0.0 && threshold.is_finite()) =>
            {
                return bad(format!("threshold {threshold} must be a positive number"));
            }
            Detector::Sandpiper { k, n, .. } if k == 0 || n == 0 || k > n => {
                return bad(format!("sandpiper needs 1 <= k <= n, got k={k} n={n}"));
            }
            Detector::Iqr { safety, fallback }
            | Detector::Mad { safety, fallback }
            | Detector::Lr { safety, fallback }
            | Detector::Lrr { safety, fallback }
                if !(safety >= 0.0 && safety.is_finite() && fallback > 0.0) =>
            {
                return bad(format!(
                    "safety parameter {safety} must be >= 0 and fallback threshold {fallback} > 0"
                ));
            }
            _ => {}
        }
        if let Pattern::Auto {
            consolidate_below,
            balance_above,
            ..
        } = self.pattern
            && !(consolidate_below < balance_above)
        {
            return bad(format!(
                "consolidate_below ({consolidate_below}) must be below balance_above ({balance_above})"
            ));
        }
        if !(self.limits.vm_cooldown_s >= 0.0) {
            return bad("vm_cooldown_s must be >= 0".into());
        }
        if self.limits.per_host == Some(0) || self.limits.per_cluster == Some(0) {
            return bad("migration limits must be at least 1 (omit them for no limit)".into());
        }
        Ok(())
    }
}

/// Why a VM is moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its host is a hotspot.
    Hotspot,
    /// Its host is a coldspot being emptied to be switched off.
    Coldspot,
}

/// One migration to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// Index of the VM in the snapshot, and its id.
    pub vm: usize,
    pub vm_id: u64,
    /// Host indices in the snapshot.
    pub from: usize,
    pub to: usize,
    pub reason: Reason,
}

/// What the engine decided for one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub mode: Mode,
    /// Hotspots found (host indices).
    pub hotspots: Vec<usize>,
    pub migrations: Vec<Move>,
    /// Hosts that will have no VM once the migrations finish: switch them off then.
    pub switch_off: Vec<usize>,
    /// Hosts that are off and receive a VM: switch them on first.
    pub switch_on: Vec<usize>,
}

/// The decision engine. Keeps the state that spans intervals: the mode and
/// its hysteresis counter, per-VM cooldowns, the seeded RNG.
#[derive(Debug, Clone)]
pub struct Manager {
    config: Config,
    rng: ChaCha8Rng,
    mode: Mode,
    streak: u32,
    last_move: HashMap<u64, f64>,
    bufs: Bufs,
}

impl Manager {
    /// A manager with a validated configuration and a seed for the random selector.
    pub fn new(config: Config, seed: u64) -> Result<Self, ClusterError> {
        config.validate()?;
        let mode = match config.pattern {
            Pattern::Balance => Mode::Balance,
            _ => Mode::Consolidate,
        };
        Ok(Self {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            mode,
            streak: 0,
            last_move: HashMap::new(),
            bufs: Bufs::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Current mode (the one the last plan used).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Decides the migrations for this interval.
    pub fn decide(&mut self, snap: &PoolView) -> Result<Plan, ClusterError> {
        snap.validate()?;
        let mut p = Planner::new(snap, self.config.clone(), std::mem::take(&mut self.bufs));
        let hotspots: Vec<usize> = (0..snap.hosts.len())
            .filter(|&h| p.overloaded(h, None))
            .collect();
        self.update_mode(snap, !hotspots.is_empty());
        let mut plan = Plan {
            mode: self.mode,
            hotspots: hotspots.clone(),
            migrations: Vec::new(),
            switch_off: Vec::new(),
            switch_on: Vec::new(),
        };
        let movable: Vec<bool> = snap
            .vms
            .iter()
            .map(|v| {
                let cooldown = self.config.limits.vm_cooldown_s;
                v.migrating_to.is_none()
                    && (cooldown <= 0.0
                        || self
                            .last_move
                            .get(&v.id)
                            .is_none_or(|t| snap.time_s - t >= cooldown))
            })
            .collect();
        let placement = match self.mode {
            Mode::Consolidate => Placement::PowerAware,
            Mode::Balance => Placement::LeastLoaded,
        };

        // 1. Hotspots: select VMs until each host is no longer overloaded.
        let mut leaving = Vec::new();
        for &h in &hotspots {
            loop {
                if !p.can_start(h) {
                    break;
                }
                let list: Vec<usize> = p.host_vms[h]
                    .iter()
                    .copied()
                    .filter(|&v| movable[v])
                    .collect();
                let cands: Vec<Candidate> = list.iter().map(|&v| p.candidate(v, h)).collect();
                let Some(i) = select::select(self.config.selector, &cands, &mut self.rng) else {
                    break;
                };
                let v = list[i];
                p.remove(v, h);
                p.reserve_out(h);
                leaving.push((v, h));
                if !p.overloaded(h, None) {
                    break;
                }
            }
        }
        leaving.sort_by(|a, b| {
            snap.vms[b.0]
                .cpu_demand
                .total_cmp(&snap.vms[a.0].cpu_demand)
        });
        let mut excluded = vec![false; snap.hosts.len()];
        for &h in &hotspots {
            excluded[h] = true;
        }
        let mut targets = vec![false; snap.hosts.len()];
        let mut busy: Vec<usize> = (0..snap.hosts.len()).filter(|&h| p.active(h)).collect();
        let mut empties: Vec<Vec<usize>> = vec![Vec::new(); p.kinds];
        for h in 0..snap.hosts.len() {
            if !p.active(h) {
                empties[p.kind[h]].push(h);
            }
        }
        for (v, from) in leaving {
            p.release_out(from);
            match p.find_host(v, &excluded, placement, &busy, Some(&empties)) {
                Some(to) => {
                    if !p.active(to) {
                        busy.push(to);
                    }
                    p.add(v, to);
                    p.count_migration(from, to);
                    targets[to] = true;
                    plan.migrations
                        .push(p.decision(v, from, to, Reason::Hotspot));
                }
                None => p.add(v, from),
            }
        }

        // 2. Coldspots: empty the least-loaded hosts, all of a host's VMs or none.
        if self.mode == Mode::Consolidate {
            let mut excl_find = excluded.clone();
            let mut excl_place = excluded.clone();
            for h in 0..snap.hosts.len() {
                if !p.active(h) {
                    excl_find[h] = true;
                    excl_place[h] = true;
                }
                if targets[h] {
                    excl_find[h] = true;
                }
            }
            // Only hosts with VMs can receive (empty ones are off or will be).
            let open: Vec<usize> = (0..snap.hosts.len()).filter(|&h| !excl_place[h]).collect();
            let mut order: Vec<usize> = (0..snap.hosts.len()).filter(|&h| !excl_find[h]).collect();
            order.sort_by(|&a, &b| p.util(a).total_cmp(&p.util(b)).then(a.cmp(&b)));
            for h in order {
                if excl_find[h] {
                    continue;
                }
                if let Some(limit) = self.config.coldspot_below
                    && p.util(h) >= limit
                {
                    break;
                }
                excl_find[h] = true;
                excl_place[h] = true;
                if p.reserved_in[h] > 0 {
                    continue;
                }
                let mut vms: Vec<usize> = p.host_vms[h].clone();
                if vms.is_empty() || vms.iter().any(|&v| !movable[v]) {
                    continue;
                }
                vms.sort_by(|&a, &b| snap.vms[b].cpu_demand.total_cmp(&snap.vms[a].cpu_demand));
                for &v in &vms {
                    p.remove(v, h);
                }
                let mut moved: Vec<(usize, usize)> = Vec::new();
                let mut ok = true;
                for &v in &vms {
                    if !p.can_start(h) {
                        ok = false;
                        break;
                    }
                    match p.find_host(v, &excl_place, Placement::PowerAware, &open, None) {
                        Some(to) => {
                            p.add(v, to);
                            p.count_migration(h, to);
                            moved.push((v, to));
                        }
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if ok {
                    for &(v, to) in &moved {
                        excl_find[to] = true;
                        targets[to] = true;
                        plan.migrations.push(p.decision(v, h, to, Reason::Coldspot));
                    }
                } else {
                    for &(v, to) in moved.iter().rev() {
                        p.remove(v, to);
                        p.uncount_migration(h, to);
                    }
                    for &v in &vms {
                        p.add(v, h);
                    }
                }
            }
            for h in 0..snap.hosts.len() {
                if snap.hosts[h].on && p.host_vms[h].is_empty() && p.reserved_in[h] == 0 {
                    plan.switch_off.push(h);
                }
            }
        }
        plan.switch_on = (0..snap.hosts.len())
            .filter(|&h| targets[h] && !snap.hosts[h].on)
            .collect();
        self.bufs = p.finish();
        for d in &plan.migrations {
            self.last_move.insert(d.vm_id, snap.time_s);
        }
        Ok(plan)
    }

    fn update_mode(&mut self, snap: &PoolView, has_hotspots: bool) {
        let Pattern::Auto {
            consolidate_below,
            balance_above,
            dwell,
        } = self.config.pattern
        else {
            return;
        };
        let (mut demand, mut cap) = (0.0, 0.0);
        for h in snap.hosts.iter().filter(|h| h.on) {
            cap += h.cpu_capacity;
        }
        for v in &snap.vms {
            demand += v.cpu_demand;
        }
        let load = if cap > 0.0 {
            demand / cap
        } else {
            f64::INFINITY
        };
        let wants_other = match self.mode {
            Mode::Consolidate => has_hotspots && load >= balance_above,
            Mode::Balance => load < consolidate_below,
        };
        if wants_other {
            self.streak += 1;
            if self.streak >= dwell.max(1) {
                self.mode = match self.mode {
                    Mode::Consolidate => Mode::Balance,
                    Mode::Balance => Mode::Consolidate,
                };
                self.streak = 0;
            }
        } else {
            self.streak = 0;
        }
    }
}

/// The tentative allocation while a plan is being built.
struct Planner<'a> {
    snap: &'a PoolView,
    cfg: Config,
    host_vms: Vec<Vec<usize>>,
    cpu: Vec<f64>,
    ram: Vec<f64>,
    net: Vec<f64>,
    hist: Vec<[f64; HISTORY_LEN]>,
    vm_hist: Vec<[f64; HISTORY_LEN]>,
    vm_hist_len: Vec<usize>,
    reserved_in: Vec<u32>,
    migrations: Vec<u32>,
    pending_out: Vec<u32>,
    pending_total: u32,
    cluster_migrations: u32,
    scratch: [f64; HISTORY_LEN],
    /// Hosts with the same specification share a kind: all empty hosts of a
    /// kind are interchangeable, so placement evaluates only the first.
    kind: Vec<usize>,
    kinds: usize,
    cands: Vec<(f64, usize)>,
}

/// Buffers a `Manager` keeps between intervals so planning does not allocate.
#[derive(Debug, Clone, Default)]
struct Bufs {
    host_vms: Vec<Vec<usize>>,
    cpu: Vec<f64>,
    ram: Vec<f64>,
    net: Vec<f64>,
    hist: Vec<[f64; HISTORY_LEN]>,
    vm_hist: Vec<[f64; HISTORY_LEN]>,
    vm_hist_len: Vec<usize>,
    reserved_in: Vec<u32>,
    migrations: Vec<u32>,
    pending_out: Vec<u32>,
    kind: Vec<usize>,
    cands: Vec<(f64, usize)>,
}

impl<'a> Planner<'a> {
    fn new(snap: &'a PoolView, cfg: Config, mut b: Bufs) -> Self {
        let nh = snap.hosts.len();
        b.host_vms.resize_with(nh, Vec::new);
        b.host_vms.truncate(nh);
        for l in b.host_vms.iter_mut() {
            l.clear();
        }
        let reset_f = |v: &mut Vec<f64>| {
            v.clear();
            v.resize(nh, 0.0);
        };
        reset_f(&mut b.cpu);
        reset_f(&mut b.ram);
        reset_f(&mut b.net);
        let reset_u = |v: &mut Vec<u32>| {
            v.clear();
            v.resize(nh, 0);
        };
        reset_u(&mut b.reserved_in);
        reset_u(&mut b.migrations);
        reset_u(&mut b.pending_out);
        b.hist.clear();
        b.hist.resize(nh, [0.0; HISTORY_LEN]);
        b.vm_hist.clear();
        b.vm_hist_len.clear();
        b.kind.clear();
        let mut p = Planner {
            snap,
            cfg,
            host_vms: b.host_vms,
            cpu: b.cpu,
            ram: b.ram,
            net: b.net,
            hist: b.hist,
            vm_hist: b.vm_hist,
            vm_hist_len: b.vm_hist_len,
            reserved_in: b.reserved_in,
            migrations: b.migrations,
            pending_out: b.pending_out,
            pending_total: 0,
            cluster_migrations: 0,
            scratch: [0.0; HISTORY_LEN],
            kind: b.kind,
            kinds: 0,
            cands: b.cands,
        };
        let mut reps: Vec<usize> = Vec::new();
        for (i, h) in snap.hosts.iter().enumerate() {
            let same = reps.iter().position(|&r| {
                let o = &snap.hosts[r];
                o.power_model == h.power_model
                    && o.cpu_capacity == h.cpu_capacity
                    && o.core_capacity == h.core_capacity
                    && o.ram_mb == h.ram_mb
                    && o.net_mbps == h.net_mbps
            });
            p.kind.push(same.unwrap_or_else(|| {
                reps.push(i);
                reps.len() - 1
            }));
        }
        p.kinds = reps.len();

        for v in &snap.vms {
            let mut a = [0.0; HISTORY_LEN];
            let n = v.history.len().min(HISTORY_LEN);
            for (i, x) in v.history.iter().rev().take(n).enumerate() {
                a[i] = *x;
            }
            p.vm_hist.push(a);
            p.vm_hist_len.push(n);
        }
        for (h, info) in snap.hosts.iter().enumerate() {
            p.cpu[h] = info.cpu_overhead;
        }
        for (i, v) in snap.vms.iter().enumerate() {
            p.add(i, v.host);
            if let Some(d) = v.migrating_to {
                // In flight: it occupies its destination too.
                p.cpu[d] += v.cpu_demand;
                p.ram[d] += v.ram_mb;
                p.net[d] += v.net_mbps;
                p.reserved_in[d] += 1;
                p.migrations[d] += 1;
                p.migrations[v.host] += 1;
                p.cluster_migrations += 1;
            }
        }
        p
    }

    /// Gives the buffers back for the next interval.
    fn finish(self) -> Bufs {
        Bufs {
            host_vms: self.host_vms,
            cpu: self.cpu,
            ram: self.ram,
            net: self.net,
            hist: self.hist,
            vm_hist: self.vm_hist,
            vm_hist_len: self.vm_hist_len,
            reserved_in: self.reserved_in,
            migrations: self.migrations,
            pending_out: self.pending_out,
            kind: self.kind,
            cands: self.cands,
        }
    }

    fn add(&mut self, v: usize, h: usize) {
        let vm = &self.snap.vms[v];
        self.host_vms[h].push(v);
        self.cpu[h] += vm.cpu_demand;
        self.ram[h] += vm.ram_mb;
        self.net[h] += vm.net_mbps;
        let w = vm.cpu_size / self.snap.hosts[h].cpu_capacity;
        for i in 0..self.vm_hist_len[v] {
            self.hist[h][i] += self.vm_hist[v][i] * w;
        }
    }

    fn remove(&mut self, v: usize, h: usize) {
        let vm = &self.snap.vms[v];
        if let Some(pos) = self.host_vms[h].iter().position(|x| *x == v) {
            self.host_vms[h].remove(pos);
        }
        self.cpu[h] -= vm.cpu_demand;
        self.ram[h] -= vm.ram_mb;
        self.net[h] -= vm.net_mbps;
        let w = vm.cpu_size / self.snap.hosts[h].cpu_capacity;
        for i in 0..self.vm_hist_len[v] {
            self.hist[h][i] -= self.vm_hist[v][i] * w;
        }
        if self.host_vms[h].is_empty() {
            // Avoid rounding residue: an empty host has no history.
            self.hist[h] = [0.0; HISTORY_LEN];
        }
    }

    /// Host has VMs (or VMs arriving): it draws power and counts as active.
    fn active(&self, h: usize) -> bool {
        !self.host_vms[h].is_empty() || self.reserved_in[h] > 0
    }

    fn util(&self, h: usize) -> f64 {
        self.cpu[h] / self.snap.hosts[h].cpu_capacity
    }

    fn mig_time(&self, v: usize, h: usize) -> f64 {
        self.snap.vms[v].ram_mb / self.snap.migration_bandwidth_mb_s(h, h)
    }

    /// Runs the detector on host `h`, as planned, optionally with VM `extra` added.
    fn overloaded(&mut self, h: usize, extra: Option<usize>) -> bool {
        if self.host_vms[h].is_empty() && self.reserved_in[h] == 0 && extra.is_none() {
            return false;
        }
        let cap = self.snap.hosts[h].cpu_capacity;
        let mut util = self.cpu[h] / cap;
        if let Detector::Threshold { threshold } = self.cfg.detector {
            // No history needed.
            let extra = extra.map_or(0.0, |v| self.snap.vms[v].cpu_demand / cap);
            return util + extra > threshold;
        }
        self.scratch = self.hist[h];
        // Only the regressions look ahead by the migration time.
        let needs_time = matches!(
            self.cfg.detector,
            Detector::Lr { .. } | Detector::Lrr { .. }
        );
        let mut max_t: f64 = 0.0;
        if needs_time {
            for &v in &self.host_vms[h] {
                max_t = max_t.max(self.mig_time(v, h));
            }
        }
        if let Some(v) = extra {
            let vm = &self.snap.vms[v];
            util += vm.cpu_demand / cap;
            let w = vm.cpu_size / cap;
            for i in 0..self.vm_hist_len[v] {
                self.scratch[i] += self.vm_hist[v][i] * w;
            }
            if needs_time {
                max_t = max_t.max(self.mig_time(v, h));
            }
        }
        let mut len = HISTORY_LEN;
        while len > 0 && self.scratch[len - 1] == 0.0 {
            len -= 1;
        }
        let load = HostLoad {
            utilization: util,
            history_newest_first: &self.scratch[..len],
            max_migration_time_s: max_t,
            interval_s: self.snap.interval_s,
        };
        self.cfg.detector.is_overloaded(&load)
    }

    fn candidate(&self, v: usize, h: usize) -> Candidate<'_> {
        let vm = &self.snap.vms[v];
        let host = &self.snap.hosts[h];
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
            history_newest_first: &self.vm_hist[v][..self.vm_hist_len[v]],
        }
    }

    /// Whether one more migration may start from or to host `h`.
    fn can_start(&self, h: usize) -> bool {
        let l = &self.cfg.limits;
        l.per_host
            .is_none_or(|m| self.migrations[h] + self.pending_out[h] < m)
            && l.per_cluster
                .is_none_or(|m| self.cluster_migrations + self.pending_total < m)
    }

    fn reserve_out(&mut self, h: usize) {
        self.pending_out[h] += 1;
        self.pending_total += 1;
    }

    fn release_out(&mut self, h: usize) {
        self.pending_out[h] -= 1;
        self.pending_total -= 1;
    }

    fn count_migration(&mut self, from: usize, to: usize) {
        self.migrations[from] += 1;
        self.migrations[to] += 1;
        self.cluster_migrations += 1;
    }

    fn uncount_migration(&mut self, from: usize, to: usize) {
        self.migrations[from] -= 1;
        self.migrations[to] -= 1;
        self.cluster_migrations -= 1;
    }

    fn fits(&self, v: usize, h: usize) -> bool {
        let vm = &self.snap.vms[v];
        let host = &self.snap.hosts[h];
        let eps = 1e-9;
        self.cpu[h] + vm.cpu_demand <= host.cpu_capacity + eps
            && vm.cpu_demand <= host.core_capacity * vm.cores.max(1) as f64 + eps
            && self.ram[h] + vm.ram_mb <= host.ram_mb + eps
            && (host.net_mbps <= 0.0 || self.net[h] + vm.net_mbps <= host.net_mbps + eps)
    }

    /// Power increase (W) of putting `v` on `h`.
    fn power_delta(&self, v: usize, h: usize) -> f64 {
        let host = &self.snap.hosts[h];
        let model = &self.snap.power_models[host.power_model];
        let after = model.power((self.cpu[h] + self.snap.vms[v].cpu_demand) / host.cpu_capacity);
        if self.active(h) {
            after - model.power(self.util(h))
        } else {
            after
        }
    }

    /// The host for VM `v`: among `among` (hosts with VMs; the caller keeps
    /// the list current), and when `empties` is given also the first usable
    /// empty host of each kind.
    fn find_host(
        &mut self,
        v: usize,
        excluded: &[bool],
        how: Placement,
        among: &[usize],
        empties: Option<&[Vec<usize>]>,
    ) -> Option<usize> {
        if how == Placement::LeastLoaded {
            let mut best: Option<(f64, usize)> = None;
            for h in 0..self.snap.hosts.len() {
                if excluded[h] || !self.snap.hosts[h].on || !self.fits(v, h) || !self.can_start(h) {
                    continue;
                }
                let cap = self.snap.hosts[h].cpu_capacity;
                let after = (self.cpu[h] + self.snap.vms[v].cpu_demand) / cap;
                if best.is_some_and(|(b, _)| after >= b) {
                    continue;
                }
                if self.active(h) && self.overloaded(h, Some(v)) {
                    continue;
                }
                best = Some((after, h));
            }
            if let Some((_, h)) = best {
                return Some(h);
            }
        }
        // Cheap checks first; the detector runs only on the candidates in
        // order of power increase (ties: lowest index, as a scan would give).
        let mut cands = std::mem::take(&mut self.cands);
        cands.clear();
        for &h in among {
            if excluded[h] || !self.active(h) || !self.can_start(h) || !self.fits(v, h) {
                continue;
            }
            cands.push((self.power_delta(v, h), h));
        }
        for list in empties.unwrap_or(&[]) {
            // Empty hosts of one kind are interchangeable: the first usable one.
            let first = list
                .iter()
                .copied()
                .find(|&h| !excluded[h] && !self.active(h) && self.can_start(h));
            if let Some(h) = first
                && self.fits(v, h)
            {
                cands.push((self.power_delta(v, h), h));
            }
        }
        // Take candidates in order of (power increase, index) until one is
        // not overloaded with the VM; usually the first few, so no full sort.
        let mut found = None;
        while !cands.is_empty() {
            let mut best = 0;
            for i in 1..cands.len() {
                let (a, b) = (cands[i], cands[best]);
                if a.0 < b.0 || (a.0 == b.0 && a.1 < b.1) {
                    best = i;
                }
            }
            let (_, h) = cands.swap_remove(best);
            // CloudSim skips the overload check for an empty host.
            if !self.active(h) || !self.overloaded(h, Some(v)) {
                found = Some(h);
                break;
            }
        }
        self.cands = cands;
        found
    }

    fn decision(&self, v: usize, from: usize, to: usize, reason: Reason) -> Move {
        Move {
            vm: v,
            vm_id: self.snap.vms[v].id,
            from,
            to,
            reason,
        }
    }
}
