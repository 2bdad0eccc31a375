//! One interval's plan: relieve hotspots, then (consolidating) empty
//! coldspots and switch them off (docs/MANAGER.md, "One interval").

use rand_chacha::ChaCha8Rng;

use crate::allocation::{Allocation, HostSearch};
use crate::config::{Config, Model};
use crate::limits::MigrationCount;
use crate::model::PoolView;
use crate::pattern::Mode;
use crate::place::{PieceCache, PlaceCandidate, Placement, Waiting};
use crate::select::{self, Candidate};

/// Why a VM is moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its host is a hotspot.
    Hotspot,
    /// Its host is a coldspot being emptied to be switched off.
    Coldspot,
}

/// One VM move the manager decides: a migration to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// Index of the VM in the pool view, and its id.
    pub vm: usize,
    pub vm_id: u64,
    /// Host indices in the pool view.
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

/// What planning needs between intervals (kept so it does not allocate).
#[derive(Debug, Clone, Default)]
pub(crate) struct PlanBuffers {
    alloc: Allocation,
    count: MigrationCount,
    candidates: Vec<std::cmp::Reverse<PlaceCandidate>>,
    waiting: Vec<std::cmp::Reverse<Waiting>>,
    pieces: PieceCache,
}

/// Builds one plan on a tentative allocation.
pub(crate) struct Planner<'a> {
    pub view: &'a PoolView,
    pub config: &'a Config,
    pub alloc: &'a mut Allocation,
    pub count: &'a mut MigrationCount,
    /// Placement's candidate hosts (power increase, host).
    pub candidates: &'a mut Vec<std::cmp::Reverse<PlaceCandidate>>,
    /// The exact search's hosts waiting for the detector.
    pub waiting: &'a mut Vec<std::cmp::Reverse<Waiting>>,
    /// The load pieces of the VMs placed lately in this plan.
    pub pieces: &'a mut PieceCache,
}

impl<'a> Planner<'a> {
    /// Starts from the allocation and the migrations in flight in `view`.
    pub fn new(view: &'a PoolView, config: &'a Config, bufs: &'a mut PlanBuffers) -> Self {
        (bufs.alloc).reset(view, HostSearch::choose(config, view.hosts.len()), config);
        bufs.count.reset(view, config.limits);
        bufs.pieces.clear();
        Planner {
            view,
            config,
            alloc: &mut bufs.alloc,
            count: &mut bufs.count,
            candidates: &mut bufs.candidates,
            waiting: &mut bufs.waiting,
            pieces: &mut bufs.pieces,
        }
    }

    /// The hosts the detector calls overloaded.
    pub fn hotspots(&mut self) -> Vec<usize> {
        (0..self.view.hosts.len())
            .filter(|&h| {
                self.alloc
                    .overloaded(self.view, &self.config.detector, h, None)
            })
            .collect()
    }

    /// The plan for `mode`; only VMs marked in `movable` are selected.
    pub fn plan(
        mut self,
        mode: Mode,
        hotspots: Vec<usize>,
        movable: &[bool],
        rng: &mut ChaCha8Rng,
    ) -> Plan {
        let n = self.view.hosts.len();
        let placement = match mode {
            Mode::Consolidate => Placement::PowerAware,
            Mode::Balance => Placement::LeastLoaded,
        };
        let mut excluded = vec![false; n];
        for &h in &hotspots {
            excluded[h] = true;
            // Excluded for the whole plan.
            self.alloc.hide(h);
        }
        // Hosts that receive a VM in this plan.
        let mut targets = vec![false; n];
        let mut migrations = Vec::new();
        let leaving = self.select_leaving(&hotspots, movable, rng);
        self.place_leaving(leaving, &excluded, placement, &mut targets, &mut migrations);
        let mut switch_off = Vec::new();
        if mode == Mode::Consolidate {
            self.empty_coldspots(&excluded, movable, &mut targets, &mut migrations);
            switch_off = (0..n)
                .filter(|&h| {
                    self.view.hosts[h].on
                        && self.alloc.vms_on(h).is_empty()
                        && !self.alloc.has_arrivals(h)
                })
                .collect();
        }
        let switch_on = (0..n)
            .filter(|&h| targets[h] && !self.view.hosts[h].on)
            .collect();
        Plan {
            mode,
            hotspots,
            migrations,
            switch_off,
            switch_on,
        }
    }

    /// Takes VMs off each hotspot, chosen by the selector, until it is no
    /// longer overloaded; returns (vm, host) largest demand first.
    fn select_leaving(
        &mut self,
        hotspots: &[usize],
        movable: &[bool],
        rng: &mut ChaCha8Rng,
    ) -> Vec<(usize, usize)> {
        let view = self.view;
        let mut leaving = Vec::new();
        for &h in hotspots {
            if !self.count.can_start(h) {
                continue;
            }
            let mut list: Vec<usize> = (self.alloc.vms_on(h).iter())
                .copied()
                .filter(|&v| movable[v])
                .collect();
            // A VM's candidate does not depend on the host's other VMs:
            // built once per hotspot, kept in step with `list`, on copies
            // of the histories (the allocation changes as VMs leave) when
            // the selector reads them, else without.
            let copy = self.config.selector.reads_history();
            let mut history = Vec::new();
            let mut spans = Vec::with_capacity(list.len());
            for &v in list.iter().filter(|_| copy) {
                let start = history.len();
                history.extend_from_slice(self.alloc.vm_history(v));
                spans.push(start..history.len());
            }
            spans.resize(list.len(), 0..0);
            let mut cands: Vec<Candidate> = (list.iter().zip(spans))
                .map(|(&v, span)| self.alloc.candidate(view, v, h, &history[span]))
                .collect();
            while self.count.can_start(h) {
                let Some(i) = select::select(self.config.selector, &cands, rng) else {
                    break;
                };
                let v = list.remove(i);
                cands.remove(i);
                self.alloc.remove(view, v, h);
                self.count.reserve_out(h);
                leaving.push((v, h));
                if !self.alloc.overloaded(view, &self.config.detector, h, None) {
                    break;
                }
            }
        }
        leaving.sort_by(|a, b| {
            view.vms[b.0]
                .cpu_demand
                .total_cmp(&view.vms[a.0].cpu_demand)
        });
        leaving
    }

    /// Places the VMs leaving hotspots; one that finds no host stays.
    fn place_leaving(
        &mut self,
        leaving: Vec<(usize, usize)>,
        excluded: &[bool],
        placement: Placement,
        targets: &mut [bool],
        migrations: &mut Vec<Move>,
    ) {
        let view = self.view;
        let n = view.hosts.len();
        let mut busy: Vec<usize> = (0..n).filter(|&h| self.alloc.active(h)).collect();
        let mut empties: Vec<Vec<usize>> = vec![Vec::new(); self.alloc.kinds()];
        for h in 0..n {
            if !self.alloc.active(h) {
                empties[self.alloc.kind(h)].push(h);
            }
        }
        for (v, from) in leaving {
            self.count.release_out(from);
            match self.find_host(v, excluded, placement, &busy, Some(&empties)) {
                Some(to) => {
                    if !self.alloc.active(to) {
                        busy.push(to);
                    }
                    self.alloc.add(view, v, to);
                    self.count.add(from, to);
                    targets[to] = true;
                    migrations.push(self.make_move(v, from, to, Reason::Hotspot));
                }
                None => self.alloc.add(view, v, from),
            }
        }
    }

    /// Empties the least-loaded hosts, all of a host's VMs or none, onto
    /// hosts that stay on. Ferry: by planned load, never a host that
    /// received a VM in this plan; CloudSim: by load before the plan, among
    /// hosts that were on, including those that just received a VM.
    fn empty_coldspots(
        &mut self,
        excluded: &[bool],
        movable: &[bool],
        targets: &mut [bool],
        migrations: &mut Vec<Move>,
    ) {
        let view = self.view;
        let n = view.hosts.len();
        let cloudsim = self.config.model == Model::CloudSim;
        // Not to be emptied, and not to receive.
        let mut excl_find = excluded.to_vec();
        let mut excl_place = excluded.to_vec();
        for h in 0..n {
            let off = if cloudsim {
                self.alloc.base_util(h) == 0.0
            } else {
                !self.alloc.active(h)
            };
            if off {
                excl_find[h] = true;
                excl_place[h] = true;
                self.alloc.hide(h);
            }
            if targets[h] && !cloudsim {
                excl_find[h] = true;
            }
        }
        // Only hosts with VMs can receive (empty ones are off or will be).
        let open: Vec<usize> = (0..n).filter(|&h| !excl_place[h]).collect();
        let load = |alloc: &Allocation, h: usize| {
            if cloudsim {
                alloc.base_util(h)
            } else {
                alloc.util(view, h)
            }
        };
        let mut order: Vec<usize> = (0..n).filter(|&h| !excl_find[h]).collect();
        order.sort_by(|&a, &b| {
            let (ua, ub) = (load(self.alloc, a), load(self.alloc, b));
            ua.total_cmp(&ub).then(a.cmp(&b))
        });
        for h in order {
            if excl_find[h] {
                continue;
            }
            let u = load(self.alloc, h);
            if cloudsim && u >= 1.0 {
                break;
            }
            if let Some(limit) = self.config.coldspot_below
                && u >= limit
            {
                break;
            }
            excl_find[h] = true;
            excl_place[h] = true;
            // Never a destination again in this plan.
            self.alloc.hide(h);
            if self.alloc.has_arrivals(h) {
                continue;
            }
            let vms = self.alloc.vms_on(h);
            if vms.is_empty() || vms.iter().any(|&v| !movable[v]) {
                continue;
            }
            let mut vms = vms.to_vec();
            vms.sort_by(|&a, &b| view.vms[b].cpu_demand.total_cmp(&view.vms[a].cpu_demand));
            let Some(moved) = self.empty_host(h, &vms, &excl_place, &open) else {
                continue;
            };
            for (v, to) in moved {
                excl_find[to] = true;
                targets[to] = true;
                migrations.push(self.make_move(v, h, to, Reason::Coldspot));
            }
        }
    }

    /// Moves every VM in `vms` (all of host `h`'s) power-aware onto `open`
    /// hosts not in `excluded`; returns (vm, destination), or `None` with
    /// nothing moved when one of them finds no host.
    fn empty_host(
        &mut self,
        h: usize,
        vms: &[usize],
        excluded: &[bool],
        open: &[usize],
    ) -> Option<Vec<(usize, usize)>> {
        let view = self.view;
        for &v in vms {
            self.alloc.remove(view, v, h);
        }
        let mut moved: Vec<(usize, usize)> = Vec::new();
        for &v in vms {
            let to = if self.count.can_start(h) {
                self.find_host(v, excluded, Placement::PowerAware, open, None)
            } else {
                None
            };
            let Some(to) = to else {
                // All or nothing: take back what was moved.
                for &(v, to) in moved.iter().rev() {
                    self.alloc.remove(view, v, to);
                    self.count.remove(h, to);
                }
                for &v in vms {
                    self.alloc.add(view, v, h);
                }
                return None;
            };
            self.alloc.add(view, v, to);
            self.count.add(h, to);
            moved.push((v, to));
        }
        Some(moved)
    }

    fn make_move(&self, v: usize, from: usize, to: usize, reason: Reason) -> Move {
        Move {
            vm: v,
            vm_id: self.view.vms[v].id,
            from,
            to,
            reason,
        }
    }
}
