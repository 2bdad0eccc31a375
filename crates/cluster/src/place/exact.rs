//! Power-aware placement through the load buckets, under the exact rule:
//! the first host in (increase, index) order that passes the checks, the
//! one a scan of every candidate finds, evaluating only the hosts whose
//! increase may come first (docs/MANAGER.md, "Placement").
//!
//! For one VM, a host's increase is piecewise linear in its load (`Piece`).
//! Each piece's buckets are walked from its cheaper end; no host of a
//! bucket has an increase below the bucket's bound (the piece's least on
//! the bucket's loads, less a margin far above float rounding). A host
//! whose computed increase is below every bound not yet walked precedes
//! every host not yet seen, so hosts are checked in exact (increase, index)
//! order. Hosts whose increases are mathematically equal (the load and the
//! load with the VM on segments of equal slope) are all evaluated, since
//! rounding orders them, but each is a few flops on its bucket's entry,
//! and hosts of bit-identical load (a bucket keeps them side by side) share
//! one: once one of them is taken, or the best so far precedes the
//! first, the rest of them are passed over.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::PlaceCandidate;
use super::indexed::kind_pieces;
use crate::allocation::Allocation;
use crate::buckets::{BUCKETS, LoadBuckets, bucket_of, run_end};
use crate::config::Model;
use crate::detect::Detector;
use crate::index::Piece;
use crate::lr_line::{LrHost, LrLine, look_ahead};
use crate::model::PoolView;
use crate::planner::Planner;

/// Far above the rounding of a computed increase (about 1e-13 W for
/// powers of hundreds of watts), far below any difference that matters.
const MARGIN_W: f64 = 1e-9;

/// One piece's walk through its buckets, from its cheaper end.
struct Walk {
    kind: usize,
    piece: Piece,
    /// The kind's first piece also takes loads below 0 (rounding); its
    /// last, loads equal to its top.
    first: bool,
    last: bool,
    /// The next non-empty bucket, and the one past the last in the walk's
    /// direction.
    next: isize,
    end: isize,
    step: isize,
}

impl Walk {
    fn new(buckets: &LoadBuckets, kind: usize, piece: Piece, first: bool, last: bool) -> Self {
        let (lo, hi) = (bucket_of(piece.lo) as isize, bucket_of(piece.hi) as isize);
        let (from, end, step) = if piece.at_lo <= piece.at_hi {
            (lo, hi + 1, 1)
        } else {
            (hi, lo - 1, -1)
        };
        Walk {
            kind,
            piece,
            first,
            last,
            next: buckets.next_full(kind, from, end, step),
            end,
            step,
        }
    }

    fn done(&self) -> bool {
        self.next == self.end
    }

    /// No host of the piece in the next bucket has a smaller increase.
    fn bound(&self) -> f64 {
        let p = &self.piece;
        let b = self.next as f64;
        let x0 = p.lo.max(b / BUCKETS as f64);
        let x1 = p.hi.min((b + 1.0) / BUCKETS as f64);
        p.at(x0).min(p.at(x1)) - MARGIN_W
    }

    fn contains(&self, u: f64) -> bool {
        let p = &self.piece;
        (self.first || u >= p.lo) && (u < p.hi || (self.last && u <= p.hi))
    }
}

impl Planner<'_> {
    /// `least_power` with the load buckets (Ferry model, exact rule).
    pub(super) fn least_power_exact(
        &mut self,
        v: usize,
        excluded: &[bool],
        empties: Option<&[Vec<usize>]>,
    ) -> Option<usize> {
        let view = self.view;
        let alloc = &*self.alloc;
        let count = &*self.count;
        let buckets = alloc.buckets()?;
        let detector = &self.config.detector;
        let model = Model::Ferry;
        let demand = view.vms[v].cpu_demand;
        // The checks but the detector's, and all of them.
        let checks = |h: usize| !excluded[h] && count.can_start(h) && alloc.fits(view, v, h, model);
        let passes = |h: usize| {
            // Empty hosts were checked when found; CloudSim skips the
            // overload check for them.
            !alloc.active(h) || (checks(h) && !alloc.overloaded(view, detector, h, Some(v)))
        };
        // A threshold is as cheap as the other checks, and so is LR's
        // verdict when its lines settle it: such a host is checked when it
        // would be the best so far, and the best that passes is kept.
        // Others wait in (increase, index) order, each checked once no host
        // unseen can precede it.
        let eager = matches!(detector, Detector::Threshold { .. });
        let mut best: Option<PlaceCandidate> = None;
        let mut seen = BinaryHeap::from(std::mem::take(&mut *self.candidates));
        seen.clear();
        // Empty hosts of one kind are interchangeable: the first usable one
        // (it passes: CloudSim skips the overload check for empty hosts).
        for list in empties.unwrap_or(&[]) {
            if let Some(h) = super::first_empty(list, excluded, alloc, count)
                && alloc.fits(view, v, h, model)
            {
                let c = PlaceCandidate {
                    delta: alloc.power_delta(view, v, h, model),
                    h,
                };
                best = Some(best.map_or(c, |b| b.min(c)));
            }
        }
        let lr = LrRefusal::for_vm(alloc, detector, v);
        let (mut walks, mut next) = start_walks(view, alloc, buckets, demand, detector);
        let found = loop {
            let bound = bound_after(&next);
            // A host waiting that precedes the best and every host unseen.
            if let Some(&Reverse(c)) = seen.peek()
                && c.delta < bound
                && best.is_none_or(|b| c < b)
            {
                seen.pop();
                if passes(c.h) {
                    best = Some(c);
                }
                continue;
            }
            if let Some(b) = best
                && b.delta < bound
            {
                break Some(b.h);
            }
            let Some(Reverse(n)) = next.pop() else {
                break None;
            };
            // Walk on while this walk's bounds stay the least and no host
            // seen could be taken (a piece of equal increases in one go).
            let first = best.into_iter().chain(seen.peek().map(|c| c.0)).min();
            let mut limit = first.map_or(bound_after(&next), |c| c.delta.min(bound_after(&next)));
            let w = &mut walks[n.h];
            let cap = buckets.cap(w.kind);
            let rep = alloc.rep(w.kind);
            let power = &view.power_models[view.hosts[rep].power_model];
            let lr = lr.map(|r| r.on_kind(view, alloc, v, w.kind, cap));
            loop {
                let b = w.next as usize;
                // With LR, each host's line beside its entry; a bucket LR
                // refuses whole is skipped.
                let lines = lr.map(|r| r.lines(buckets, w.kind, b));
                debug_assert!(
                    lines.is_none_or(|l| l.is_some()) || {
                        let mut hosts = buckets.bucket(w.kind, b).iter();
                        hosts.all(|e| alloc.overloaded(view, detector, e.host as usize, Some(v)))
                    }
                );
                let entries = match lines {
                    Some(None) => &[][..],
                    _ => buckets.bucket(w.kind, b),
                };
                // Hosts of one load in a run, lowest index first: one
                // increase for the run, and its hosts are taken in order
                // until one settles it.
                let mut i = 0;
                while i < entries.len() {
                    let run = i..run_end(entries, i);
                    i = run.end;
                    let e = &entries[run.start];
                    if !w.contains(e.load) {
                        continue;
                    }
                    let delta = power.power((e.cpu + demand) / cap) - e.power;
                    debug_assert_eq!(
                        delta.to_bits(),
                        (alloc.power_delta(view, v, e.host as usize, model)).to_bits()
                    );
                    for j in run {
                        let h = entries[j].host as usize;
                        let c = PlaceCandidate { delta, h };
                        if best.is_some_and(|b| b < c) {
                            // Nor any later host of the run.
                            break;
                        }
                        let mut sure = None;
                        if let (Some(r), Some(Some(lines))) = (lr, lines) {
                            sure = r.verdict(&lines[j]);
                            debug_assert!(sure.is_none_or(|o| {
                                o == alloc.overloaded(view, detector, h, Some(v))
                            }));
                            if sure == Some(true) {
                                // Never taken.
                                continue;
                            }
                        }
                        if !eager && sure.is_none() {
                            seen.push(Reverse(c));
                            limit = limit.min(delta);
                        } else if if eager { passes(h) } else { checks(h) } {
                            best = Some(c);
                            limit = limit.min(delta);
                            break;
                        }
                    }
                }
                w.next = buckets.next_full(w.kind, w.next + w.step, w.end, w.step);
                if w.done() {
                    break;
                }
                let b = w.bound();
                if b > limit {
                    next.push(Reverse(PlaceCandidate { delta: b, h: n.h }));
                    break;
                }
            }
        };
        *self.candidates = seen.into_vec();
        found
    }
}

/// LR's verdicts from the lines the buckets keep, for one VM: its line
/// (scaled to a kind's capacity once the kind is known), its look-ahead
/// there, and the safety factor.
#[derive(Clone, Copy)]
struct LrRefusal {
    line: LrLine,
    at: f64,
    safety: f64,
}

impl LrRefusal {
    /// For VM `v`, when the detector is LR and the buckets keep its lines.
    fn for_vm(alloc: &Allocation, detector: &Detector, v: usize) -> Option<Self> {
        match *detector {
            Detector::Lr { safety, .. } if alloc.buckets()?.keeps_lr() => {
                let line = alloc.vm_lr_line(v)?;
                Some(LrRefusal {
                    line,
                    at: f64::NAN,
                    safety,
                })
            }
            _ => None,
        }
    }

    /// The VM on kind `k` (CPU capacity `cap`).
    fn on_kind(self, view: &PoolView, alloc: &Allocation, v: usize, k: usize, cap: f64) -> Self {
        let t = alloc.migration_time(view, v, alloc.rep(k));
        LrRefusal {
            line: self.line.scaled(view.vms[v].cpu_size / cap),
            at: look_ahead(t, view.interval_s),
            safety: self.safety,
        }
    }

    /// Kind `k`'s lines in bucket `b`, or `None` when LR refuses the VM on
    /// every host there.
    fn lines<'a>(&self, buckets: &'a LoadBuckets, k: usize, b: usize) -> Option<&'a [LrHost]> {
        let (lines, summary) = buckets.lr_bucket(k, b);
        (!summary.all_refuse(&self.line, self.at, self.safety)).then_some(lines)
    }

    /// LR's verdict on a host with the VM added, when it is sure.
    fn verdict(&self, host: &LrHost) -> Option<bool> {
        host.verdict(&self.line, self.at, self.safety)
    }
}

/// Each load piece's walk for a VM of `demand`, and the walks not done
/// keyed by their next bucket's bound (`h`: the walk).
fn start_walks(
    view: &PoolView,
    alloc: &Allocation,
    buckets: &LoadBuckets,
    demand: f64,
    detector: &Detector,
) -> (Vec<Walk>, BinaryHeap<Reverse<PlaceCandidate>>) {
    let pieces = kind_pieces(view, alloc, demand, detector);
    let walks: Vec<Walk> = pieces
        .iter()
        .enumerate()
        .map(|(i, &(k, p))| {
            let first = i == 0 || pieces[i - 1].0 != k;
            let last = i + 1 == pieces.len() || pieces[i + 1].0 != k;
            Walk::new(buckets, k, p, first, last)
        })
        .collect();
    let next = walks
        .iter()
        .enumerate()
        .filter(|(_, w)| !w.done())
        .map(|(i, w)| {
            Reverse(PlaceCandidate {
                delta: w.bound(),
                h: i,
            })
        })
        .collect();
    (walks, next)
}

/// The least bound of the walks left.
fn bound_after(next: &BinaryHeap<Reverse<PlaceCandidate>>) -> f64 {
    next.peek().map_or(f64::INFINITY, |n| n.0.delta)
}
