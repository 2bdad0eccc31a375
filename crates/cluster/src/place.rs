//! Placement: which host a VM leaving another goes to (docs/MANAGER.md,
//! "Placement").

mod exact;
mod indexed;
mod pieces;

pub(crate) use exact::Waiting;
pub(crate) use pieces::PieceCache;

use std::cmp::Reverse;

use crate::detect::Detector;
use crate::names::{self, UnknownName};
use crate::planner::Planner;

/// Where a VM leaving a host goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Power-aware best fit decreasing: the host whose power grows least.
    PowerAware,
    /// The host, on or off, with the lowest utilization after the move
    /// (balance mode: spread the load).
    LeastLoaded,
}

impl Placement {
    /// Every placement, in the order names are listed.
    pub const ALL: [Placement; 2] = [Placement::PowerAware, Placement::LeastLoaded];

    /// Name as written in configurations: power-aware, least-loaded.
    pub fn name(self) -> &'static str {
        match self {
            Placement::PowerAware => "power-aware",
            Placement::LeastLoaded => "least-loaded",
        }
    }
}

impl std::str::FromStr for Placement {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        names::parse("placement", s, &Self::ALL, Self::name)
    }
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Planner<'_> {
    /// The host for VM `v`, never one in `excluded`, one that cannot start
    /// another migration, or one the detector would call overloaded with
    /// the VM added. Power-aware candidates are `among` (hosts with VMs; the
    /// caller keeps the list current) and, when `empties` is given, the
    /// first usable empty host of each kind.
    pub(crate) fn find_host(
        &mut self,
        v: usize,
        excluded: &[bool],
        how: Placement,
        among: &[usize],
        empties: Option<&[Vec<usize>]>,
    ) -> Option<usize> {
        if how == Placement::LeastLoaded
            && let Some(h) = self.least_loaded(v, excluded)
        {
            return Some(h);
        }
        self.least_power(v, excluded, among, empties)
    }

    /// The host with the lowest utilization after the move, on or off: a
    /// VM leaving a hotspot goes where the load is lightest, waking a host
    /// when every powered one is busier than the VM alone would make it.
    fn least_loaded(&mut self, v: usize, excluded: &[bool]) -> Option<usize> {
        let view = self.view;
        let model = self.config.model;
        let mut best: Option<(f64, usize)> = None;
        for h in 0..view.hosts.len() {
            if excluded[h] || !self.alloc.fits(view, v, h, model) || !self.count.can_start(h) {
                continue;
            }
            let after = self.alloc.util_with(view, v, h);
            if best.is_some_and(|(b, _)| after >= b) {
                continue;
            }
            if self.alloc.active(h)
                && self
                    .alloc
                    .overloaded(view, &self.config.detector, h, Some(v))
            {
                continue;
            }
            best = Some((after, h));
        }
        best.map(|(_, h)| h)
    }

    /// The host whose power grows least (ties: the lowest index; with a
    /// tie tolerance, the lowest index among the hosts whose increase is
    /// within it of the least).
    pub(crate) fn least_power(
        &mut self,
        v: usize,
        excluded: &[bool],
        among: &[usize],
        empties: Option<&[Vec<usize>]>,
    ) -> Option<usize> {
        if self.alloc.buckets().is_some() {
            // As with the index below: the buckets hold the hosts `among`.
            return self.least_power_exact(v, excluded, empties);
        }
        if self.alloc.index().is_some() {
            // The hosts with VMs not excluded are `among` (the callers'
            // lists), so the index of all hosts with VMs stands for it.
            return self.least_power_indexed(v, excluded, empties);
        }
        let view = self.view;
        let model = self.config.model;
        let alloc = &mut *self.alloc;
        let count = &*self.count;
        // Cheap checks first; the detector runs only on the candidates in
        // order of power increase (ties: lowest index, as a scan would give).
        let cands = &mut *self.candidates;
        cands.clear();
        // A threshold is as cheap as the other checks: with it applied here,
        // the best candidate left is the answer.
        let detector = &self.config.detector;
        let threshold = matches!(detector, Detector::Threshold { .. });
        for &h in among {
            if excluded[h]
                || !alloc.active(h)
                || !count.can_start(h)
                || !alloc.fits(view, v, h, model)
                || (threshold && alloc.overloaded(view, detector, h, Some(v)))
            {
                continue;
            }
            cands.push(Reverse(PlaceCandidate {
                delta: alloc.power_delta(view, v, h, model),
                h,
            }));
        }
        for list in empties.unwrap_or(&[]) {
            if let Some(h) = first_empty(list, excluded, alloc, count)
                && alloc.fits(view, v, h, model)
            {
                cands.push(Reverse(PlaceCandidate {
                    delta: alloc.power_delta(view, v, h, model),
                    h,
                }));
            }
        }
        let tolerance = self.config.tie_tolerance_w;
        if threshold {
            // The largest reversed candidate: the least (power increase, index).
            let best = cands.iter().max()?.0;
            if tolerance == 0.0 {
                return Some(best.h);
            }
            let limit = best.delta + tolerance;
            return cands
                .iter()
                .filter(|c| c.0.delta <= limit)
                .map(|c| c.0.h)
                .min();
        }
        // Take candidates in order of (power increase, index) until one is
        // not overloaded with the VM: a heap built in linear time (in the
        // buffer kept between calls), since usually only the first few are
        // taken but the detector may reject many when the pool is large.
        let mut heap = std::collections::BinaryHeap::from(std::mem::take(cands));
        let mut found = None;
        while let Some(Reverse(c)) = heap.pop() {
            // CloudSim skips the overload check for an empty host.
            if !alloc.active(c.h) || !alloc.overloaded(view, detector, c.h, Some(v)) {
                found = Some(c);
                break;
            }
        }
        *cands = heap.into_vec();
        let best = found?;
        if tolerance == 0.0 {
            return Some(best.h);
        }
        // The candidates left within the tolerance, lowest index first.
        let limit = best.delta + tolerance;
        let mut ties: Vec<usize> = cands
            .iter()
            .filter(|c| c.0.delta <= limit && c.0.h < best.h)
            .map(|c| c.0.h)
            .collect();
        ties.sort_unstable();
        let tie = ties
            .into_iter()
            .find(|&h| !alloc.active(h) || !alloc.overloaded(view, detector, h, Some(v)));
        Some(tie.unwrap_or(best.h))
    }
}

/// A candidate host ordered by (power increase, index): the order the
/// power-aware choice takes them in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlaceCandidate {
    pub delta: f64,
    pub h: usize,
}

impl PartialEq for PlaceCandidate {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}

impl Eq for PlaceCandidate {}

impl PartialOrd for PlaceCandidate {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for PlaceCandidate {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.delta.total_cmp(&o.delta).then(self.h.cmp(&o.h))
    }
}

/// Empty hosts of one kind are interchangeable: the first of `list` that
/// is not excluded, still off and may start a migration.
fn first_empty(
    list: &[usize],
    excluded: &[bool],
    alloc: &crate::allocation::Allocation,
    count: &crate::limits::MigrationCount,
) -> Option<usize> {
    list.iter()
        .copied()
        .find(|&h| !excluded[h] && !alloc.active(h) && count.can_start(h))
}
