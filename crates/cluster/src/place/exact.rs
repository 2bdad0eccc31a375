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
use std::ops::Range;

use super::PlaceCandidate;
use crate::allocation::Allocation;
use crate::buckets::{BLOCK, BUCKETS, LoadBuckets, bucket_of, run_end};
use crate::config::Model;
use crate::detect::Detector;
use crate::index::Piece;
use crate::limits::MigrationCount;
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

    /// No host of the piece in the next bucket has a smaller increase. The
    /// increase is monotone on the piece, and so is its computation: the
    /// least is at the bucket's edge nearer the walk's start.
    fn bound(&self) -> f64 {
        let p = &self.piece;
        let b = self.next as f64;
        let x = if self.step > 0 {
            p.lo.max(b / BUCKETS as f64)
        } else {
            p.hi.min((b + 1.0) / BUCKETS as f64)
        };
        p.at(x) - MARGIN_W
    }

    /// The next non-empty bucket past the next bucket's block.
    fn past_block(&self, buckets: &LoadBuckets) -> isize {
        let b = self.next as usize;
        let from = if self.step > 0 {
            ((b / BLOCK + 1) * BLOCK) as isize
        } else {
            (b / BLOCK * BLOCK) as isize - 1
        };
        if (from - self.end) * self.step >= 0 {
            self.end
        } else {
            buckets.next_full(self.kind, from, self.end, self.step)
        }
    }

    /// Whether the detector refuses VM `v` on every host of the next
    /// bucket's block (the debug builds' check of a block's summary).
    fn block_refused(
        &self,
        view: &PoolView,
        alloc: &Allocation,
        detector: &Detector,
        v: usize,
    ) -> bool {
        let Some(buckets) = alloc.buckets() else {
            return false;
        };
        let first = self.next as usize / BLOCK * BLOCK;
        (first..(first + BLOCK).min(BUCKETS)).all(|b| {
            (buckets.bucket(self.kind, b).iter())
                .all(|e| alloc.overloaded(view, detector, e.host as usize, Some(v)))
        })
    }

    fn contains(&self, u: f64) -> bool {
        let p = &self.piece;
        (self.first || u >= p.lo) && (u < p.hi || (self.last && u <= p.hi))
    }
}

/// A host whose detector verdict waits until no host unseen can precede
/// it, with the rest of its run (kind `kind`'s bucket `bucket`, entries
/// `next..end`: the same increase, higher indices), taken up if it fails.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiting {
    c: PlaceCandidate,
    kind: u32,
    bucket: u32,
    next: u32,
    end: u32,
}

impl PartialEq for Waiting {
    fn eq(&self, o: &Self) -> bool {
        self.c == o.c
    }
}

impl Eq for Waiting {}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Waiting {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.c.cmp(&o.c)
    }
}

/// What taking a run's hosts in index order came to.
enum Taken {
    /// A host that passes every check.
    Best(PlaceCandidate),
    /// A host for the detector, after the cheap checks.
    Wait(Waiting),
    /// None: every host refused, or preceded by the best so far.
    Nothing,
}

/// The checks on the hosts for one VM.
struct Checks<'a> {
    view: &'a PoolView,
    alloc: &'a Allocation,
    count: &'a MigrationCount,
    excluded: &'a [bool],
    detector: &'a Detector,
    v: usize,
    /// A threshold is as cheap as the other checks: hosts are checked in
    /// full when found, none waits.
    eager: bool,
}

impl Checks<'_> {
    /// The checks but the detector's.
    fn cheap(&self, h: usize) -> bool {
        !self.excluded[h]
            && self.count.can_start(h)
            && self.alloc.fits(self.view, self.v, h, Model::Ferry)
    }

    /// All of them. Empty hosts were checked when found; CloudSim skips
    /// the overload check for them.
    fn passes(&self, h: usize) -> bool {
        !self.alloc.active(h)
            || (self.cheap(h)
                && !(self.alloc).overloaded(self.view, self.detector, h, Some(self.v)))
    }

    /// Kind `k`'s bucket `b`'s entries `run`, of one increase `delta`, in
    /// index order until one is taken or must wait; `lr`: the VM on the
    /// kind and the bucket's lines, when LR's lines may settle verdicts.
    #[allow(clippy::too_many_arguments)]
    fn take_run(
        &self,
        buckets: &LoadBuckets,
        lr: Option<(LrRefusal, &[LrHost])>,
        k: usize,
        b: usize,
        run: Range<usize>,
        delta: f64,
        best: Option<PlaceCandidate>,
    ) -> Taken {
        let entries = buckets.bucket(k, b);
        for j in run.clone() {
            let h = entries[j].host as usize;
            let c = PlaceCandidate { delta, h };
            if best.is_some_and(|b| b < c) {
                // Nor any later host of the run.
                return Taken::Nothing;
            }
            let sure = lr.and_then(|(r, lines)| r.verdict(&lines[j], entries[j].cpu));
            debug_assert!(sure.is_none_or(|o| {
                o == (self.alloc).overloaded(self.view, self.detector, h, Some(self.v))
            }));
            match sure {
                // Never taken.
                Some(true) => continue,
                None if !self.eager => {
                    return Taken::Wait(Waiting {
                        c,
                        kind: k as u32,
                        bucket: b as u32,
                        next: j as u32 + 1,
                        end: run.end as u32,
                    });
                }
                _ => {
                    if if self.eager {
                        self.passes(h)
                    } else {
                        self.cheap(h)
                    } {
                        return Taken::Best(c);
                    }
                }
            }
        }
        Taken::Nothing
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
        // LR's verdict is as cheap as the other checks when its lines
        // settle it: such a host is checked when it would be the best so
        // far, and the best that passes is kept. Others wait in (increase,
        // index) order, each checked once no host unseen can precede it.
        let hosts = Checks {
            view,
            alloc,
            count,
            excluded,
            detector,
            v,
            eager: matches!(detector, Detector::Threshold { .. }),
        };
        let mut best: Option<PlaceCandidate> = None;
        let mut seen = BinaryHeap::from(std::mem::take(&mut *self.waiting));
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
        // LR's verdicts on each kind, once the kind is walked.
        let lr = LrRefusal::for_vm(alloc, detector, v);
        let mut lr_on = vec![None; if lr.is_some() { alloc.kinds() } else { 0 }];
        let mut lr_on = |k: usize| {
            let r = lr?;
            Some(*lr_on[k].get_or_insert_with(|| r.on_kind(view, alloc, v, k, buckets.cap(k))))
        };
        let pieces = self.pieces.get(view, alloc, demand, detector);
        let (mut walks, mut next) = start_walks(buckets, pieces);
        let found = loop {
            let bound = bound_after(&next);
            // A host waiting that precedes the best and every host unseen.
            if let Some(&Reverse(x)) = seen.peek()
                && x.c.delta < bound
                && best.is_none_or(|b| x.c < b)
            {
                seen.pop();
                if hosts.passes(x.c.h) {
                    best = Some(x.c);
                } else {
                    // The rest of its run.
                    let (k, b) = (x.kind as usize, x.bucket as usize);
                    let lr = lr_on(k).map(|r| (r, buckets.lr_bucket(k, b).0));
                    let run = x.next as usize..x.end as usize;
                    match hosts.take_run(buckets, lr, k, b, run, x.c.delta, best) {
                        Taken::Best(c) => best = Some(c),
                        Taken::Wait(y) => seen.push(Reverse(y)),
                        Taken::Nothing => {}
                    }
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
            let first = best.into_iter().chain(seen.peek().map(|x| x.0.c)).min();
            let mut limit = first.map_or(bound_after(&next), |c| c.delta.min(bound_after(&next)));
            let w = &mut walks[n.h];
            let cap = buckets.cap(w.kind);
            let rep = alloc.rep(w.kind);
            let power = &view.power_models[view.hosts[rep].power_model];
            let lr = lr_on(w.kind);
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
                let (entries, lr_here) = match (lr, lines) {
                    (_, Some(None)) => (&[][..], None),
                    (Some(r), Some(Some(lines))) => (buckets.bucket(w.kind, b), Some((r, lines))),
                    _ => (buckets.bucket(w.kind, b), None),
                };
                // Hosts of one load in a run, lowest index first: one
                // increase for the run, its hosts taken in order.
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
                    match hosts.take_run(buckets, lr_here, w.kind, b, run, delta, best) {
                        Taken::Best(c) => best = Some(c),
                        Taken::Wait(x) => seen.push(Reverse(x)),
                        Taken::Nothing => continue,
                    }
                    limit = limit.min(delta);
                }
                // A bucket LR refuses whole may begin a block it refuses
                // whole: on past it then.
                let block = matches!(lines, Some(None))
                    && lr.is_some_and(|r| r.refuses_block(buckets, w.kind, b));
                debug_assert!(!block || w.block_refused(view, alloc, detector, v));
                w.next = if block {
                    w.past_block(buckets)
                } else {
                    buckets.next_full(w.kind, w.next + w.step, w.end, w.step)
                };
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
        *self.waiting = seen.into_vec();
        found
    }
}

/// LR's verdicts from the lines the buckets keep, for one VM: its line
/// (scaled to a kind's capacity once the kind is known), its look-ahead
/// there, and the safety factor; for hosts whose history is zero from the
/// window's oldest on, when the VM's is too, the fallback threshold on
/// the load (the kind's capacity and the VM's demand over it).
#[derive(Clone, Copy)]
struct LrRefusal {
    line: LrLine,
    at: f64,
    safety: f64,
    zero_tail: bool,
    fallback: f64,
    cap: f64,
    share: f64,
}

impl LrRefusal {
    /// For VM `v`, when the detector is LR and the buckets keep its lines.
    fn for_vm(alloc: &Allocation, detector: &Detector, v: usize) -> Option<Self> {
        match *detector {
            Detector::Lr { safety, fallback } if alloc.buckets()?.keeps_lr() => {
                let (line, zero_tail) = alloc.vm_lr_line(v)?;
                Some(LrRefusal {
                    line,
                    at: f64::NAN,
                    safety,
                    zero_tail,
                    fallback,
                    cap: f64::NAN,
                    share: f64::NAN,
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
            cap,
            share: view.vms[v].cpu_demand / cap,
            ..self
        }
    }

    /// Kind `k`'s lines in bucket `b`, or `None` when LR refuses the VM on
    /// every host there.
    fn lines<'a>(&self, buckets: &'a LoadBuckets, k: usize, b: usize) -> Option<&'a [LrHost]> {
        let (lines, summary) = buckets.lr_bucket(k, b);
        (!summary.all_refuse(&self.line, self.at, self.safety)).then_some(lines)
    }

    /// Whether LR refuses the VM on every host of kind `k`'s block that
    /// holds bucket `b`.
    fn refuses_block(&self, buckets: &LoadBuckets, k: usize, b: usize) -> bool {
        (buckets.lr_block(k, b)).all_refuse(&self.line, self.at, self.safety)
    }

    /// LR's verdict on a host (CPU load `cpu`) with the VM added, when it
    /// is sure. Both histories zero from the window's oldest on: the
    /// history with the VM is shorter than a window, and the fallback
    /// threshold decides on the load, computed as the detector does.
    fn verdict(&self, host: &LrHost, cpu: f64) -> Option<bool> {
        if host.zero_tail && self.zero_tail {
            return Some(cpu / self.cap + self.share > self.fallback);
        }
        host.verdict(&self.line, self.at, self.safety)
    }
}

/// Each load piece's walk for a VM (its `pieces`), and the walks not done
/// keyed by their next bucket's bound (`h`: the walk).
fn start_walks(
    buckets: &LoadBuckets,
    pieces: &[(usize, Piece)],
) -> (Vec<Walk>, BinaryHeap<Reverse<PlaceCandidate>>) {
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
