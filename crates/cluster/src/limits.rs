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

/// When each VM last moved (by VM id), for `MigrationLimits::vm_cooldown_s`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cooldowns {
    last_move: HashMap<u64, f64>,
}

impl Cooldowns {
    /// For each VM of `view`: whether it may be selected to move (not in
    /// flight, and out of its cooldown).
    pub fn movable(&self, view: &PoolView, cooldown_s: f64) -> Vec<bool> {
        view.vms
            .iter()
            .map(|v| {
                v.migrating_to.is_none()
                    && (cooldown_s <= 0.0
                        || self
                            .last_move
                            .get(&v.id)
                            .is_none_or(|t| view.time_s - t >= cooldown_s))
            })
            .collect()
    }

    /// Remembers the planned moves as made at `time_s`.
    pub fn record(&mut self, moves: &[Move], time_s: f64) {
        for m in moves {
            self.last_move.insert(m.vm_id, time_s);
        }
    }
}
