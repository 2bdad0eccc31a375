//! Migration limits and their bookkeeping: concurrent migrations per host
//! and per cluster while a plan is built, and per-VM cooldowns across
//! intervals.

use std::collections::HashMap;

use crate::model::PoolView;
use crate::planner::Move;

/// Limits that keep migrations from swamping hosts or ping-ponging.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MigrationLimits {
    /// Most concurrent migrations (in + out) touching one host.
    pub per_host: Option<u32>,
    /// Most concurrent migrations in the cluster.
    pub per_cluster: Option<u32>,
    /// A VM is not moved again until this many seconds after its last move.
    pub vm_cooldown_s: f64,
    /// ...nor until this many times its own migration time has passed
    /// (memory over the migration bandwidth, longer when it dirties memory
    /// fast): VMs that are expensive to move are moved less often. 0: off.
    pub vm_cooldown_migrations: f64,
}

impl Default for MigrationLimits {
    fn default() -> Self {
        Self {
            per_host: None,
            per_cluster: None,
            vm_cooldown_s: 0.0,
            vm_cooldown_migrations: 0.0,
        }
    }
}

/// Concurrent migrations per host and in the cluster while a plan is built:
/// those in flight in the view, those already planned, and VMs selected to
/// leave a host that are not placed yet.
#[derive(Debug, Clone, Default)]
pub(crate) struct MigrationCount {
    limits: MigrationLimits,
    /// In flight or planned, touching each host (in or out).
    per_host: Vec<u32>,
    /// In flight or planned, in the cluster.
    cluster: u32,
    /// Selected to leave each host, not placed yet.
    pending_out: Vec<u32>,
    pending_total: u32,
}

impl MigrationCount {
    /// Starts an interval: counts the migrations in flight in `view`.
    pub fn reset(&mut self, view: &PoolView, limits: MigrationLimits) {
        let nh = view.hosts.len();
        self.limits = limits;
        for v in [&mut self.per_host, &mut self.pending_out] {
            v.clear();
            v.resize(nh, 0);
        }
        self.cluster = 0;
        self.pending_total = 0;
        for v in &view.vms {
            if let Some(d) = v.migrating_to {
                self.per_host[d] += 1;
                self.per_host[v.host] += 1;
                self.cluster += 1;
            }
        }
    }

    /// Whether one more migration may start from or to host `h`.
    pub fn can_start(&self, h: usize) -> bool {
        let l = &self.limits;
        l.per_host
            .is_none_or(|m| self.per_host[h] + self.pending_out[h] < m)
            && l.per_cluster
                .is_none_or(|m| self.cluster + self.pending_total < m)
    }

    /// A VM was selected to leave `h`; its destination is not known yet.
    pub fn reserve_out(&mut self, h: usize) {
        self.pending_out[h] += 1;
        self.pending_total += 1;
    }

    /// The VM reserved with `reserve_out(h)` is being placed (or stays).
    pub fn release_out(&mut self, h: usize) {
        self.pending_out[h] -= 1;
        self.pending_total -= 1;
    }

    /// A migration from `from` to `to` is planned.
    pub fn add(&mut self, from: usize, to: usize) {
        self.per_host[from] += 1;
        self.per_host[to] += 1;
        self.cluster += 1;
    }

    /// A planned migration is taken back.
    pub fn remove(&mut self, from: usize, to: usize) {
        self.per_host[from] -= 1;
        self.per_host[to] -= 1;
        self.cluster -= 1;
    }
}

/// When each VM last moved (by VM id) and the cooldown its cost adds, for
/// `MigrationLimits::vm_cooldown_s` and `vm_cooldown_migrations`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cooldowns {
    last_move: HashMap<u64, (f64, f64)>,
    /// Whether a move's own cooldown is positive: without it and without
    /// a fixed cooldown, every VM not in flight may move (no look-ups).
    any_own: bool,
}

impl Cooldowns {
    /// For each VM of `view`: whether it may be selected to move (not in
    /// flight, and out of its cooldown).
    pub fn movable(&self, view: &PoolView, cooldown_s: f64) -> Vec<bool> {
        let free = cooldown_s <= 0.0 && !self.any_own;
        view.vms
            .iter()
            .map(|v| {
                v.migrating_to.is_none()
                    && (free
                        || self.last_move.get(&v.id).is_none_or(|&(t, own)| {
                            let c = cooldown_s.max(own);
                            c <= 0.0 || view.time_s - t >= c
                        }))
            })
            .collect()
    }

    /// Remembers the planned moves as made at `time_s`, with the cooldown
    /// each one's cost adds (`per_migration` times its migration time).
    pub fn record(&mut self, view: &PoolView, moves: &[Move], per_migration: f64) {
        for m in moves {
            let own = if per_migration > 0.0 {
                per_migration * migration_time_s(view, m)
            } else {
                0.0
            };
            // NaN counts as positive: only a look-up decides it.
            self.any_own |= !(own <= 0.0);
            self.last_move.insert(m.vm_id, (view.time_s, own));
        }
    }
}

/// Seconds a move takes by pre-copy's first-order estimate: memory over the
/// bandwidth left after the VM's page dirtying (at most 90 % of it).
pub(crate) fn migration_time_s(view: &PoolView, m: &Move) -> f64 {
    let bw = view.migration_bandwidth_mb_s(m.from, m.to);
    let vm = &view.vms[m.vm];
    let dirty = vm.dirty_rate_mb_s.unwrap_or(0.0).clamp(0.0, 0.9 * bw);
    vm.ram_mb / (bw - dirty)
}
