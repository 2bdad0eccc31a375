//! An index of the hosts with VMs by kind and planned load, for the
//! power-aware placement under a tie tolerance (docs/MANAGER.md,
//! "Placement"). A host's power is piecewise linear in its load, so for one
//! VM the increase is piecewise linear in the host's load too: the least
//! increase of a piece lies at one of its ends (a walk in load order), and
//! the hosts whose increase is within the tolerance form a few load ranges,
//! whose lowest host index a tree of load bounds finds without visiting
//! every host.

use std::collections::BTreeSet;
use std::collections::btree_set::Range;
use std::ops::Bound;

use crate::model::PowerModel;

/// A load ordered by `total_cmp`, so it can key an ordered set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load(pub f64);

impl PartialEq for Load {
    fn eq(&self, o: &Self) -> bool {
        self.0.total_cmp(&o.0).is_eq()
    }
}

impl Eq for Load {}

impl PartialOrd for Load {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Load {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// Hosts with VMs by kind: ordered by (load, index), and in a tree of load
/// bounds over the kind's hosts in index order.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostIndex {
    by_load: Vec<BTreeSet<(Load, usize)>>,
    trees: Vec<BoundTree>,
    /// Each kind's hosts in index order (a host's position in its tree).
    members: Vec<Vec<usize>>,
    /// Per host: its position in its kind's list and its load when indexed.
    pos: Vec<usize>,
    load: Vec<Option<f64>>,
    kind: Vec<usize>,
}

impl HostIndex {
    /// Rebuilds the index: `kind[h]` is host h's kind, `load[h]` its load
    /// when it has VMs.
    pub fn build(&mut self, kind: &[usize], kinds: usize, load: Vec<Option<f64>>) {
        self.kind.clear();
        self.kind.extend_from_slice(kind);
        self.members.clear();
        self.members.resize_with(kinds, Vec::new);
        self.pos.clear();
        for (h, &k) in kind.iter().enumerate() {
            self.pos.push(self.members[k].len());
            self.members[k].push(h);
        }
        self.by_load.clear();
        self.trees.clear();
        for list in &self.members {
            let mut sorted: Vec<(Load, usize)> = list
                .iter()
                .filter_map(|&h| load[h].map(|u| (Load(u), h)))
                .collect();
            sorted.sort_unstable();
            self.by_load.push(sorted.into_iter().collect());
            let mut tree = BoundTree::new(list.len());
            for (p, &h) in list.iter().enumerate() {
                tree.put(p, load[h]);
            }
            tree.build();
            self.trees.push(tree);
        }
        self.load = load;
    }

    /// Host `h` now has `load` (`None`: no VM, not indexed).
    pub fn set(&mut self, h: usize, load: Option<f64>) {
        let old = self.load[h];
        if old.map(Load) == load.map(Load) {
            return;
        }
        let k = self.kind[h];
        if let Some(u) = old {
            self.by_load[k].remove(&(Load(u), h));
        }
        if let Some(u) = load {
            self.by_load[k].insert((Load(u), h));
        }
        self.trees[k].set(self.pos[h], load);
        self.load[h] = load;
    }

    /// Kind `k`'s hosts with a load in `from..to`, in load order.
    pub fn range(&self, k: usize, from: Bound<f64>, to: Bound<f64>) -> Range<'_, (Load, usize)> {
        let lo = match from {
            Bound::Included(u) => Bound::Included((Load(u), 0)),
            Bound::Excluded(u) => Bound::Excluded((Load(u), usize::MAX)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let hi = match to {
            Bound::Included(u) => Bound::Included((Load(u), usize::MAX)),
            Bound::Excluded(u) => Bound::Excluded((Load(u), 0)),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.by_load[k].range((lo, hi))
    }

    /// The lowest host index below `before` of kind `k` whose load lies in
    /// one of `ranges` (closed intervals) and that `accept`s.
    pub fn lowest(
        &self,
        k: usize,
        before: usize,
        ranges: &[(f64, f64)],
        mut accept: impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let list = &self.members[k];
        let end = list.partition_point(|&h| h < before);
        let tree = &self.trees[k];
        tree.leftmost(1, 0, tree.size, end, ranges, &mut |p| accept(list[p]))
            .map(|p| list[p])
    }
}

/// Least and greatest load under each node of a complete binary tree over
/// positions (1-based heap layout); an empty leaf has no load.
#[derive(Debug, Clone, Default)]
struct BoundTree {
    size: usize,
    min: Vec<f64>,
    max: Vec<f64>,
}

impl BoundTree {
    fn new(n: usize) -> Self {
        let size = n.next_power_of_two().max(1);
        Self {
            size,
            min: vec![f64::INFINITY; 2 * size],
            max: vec![f64::NEG_INFINITY; 2 * size],
        }
    }

    /// Sets a leaf without updating its ancestors (then `build`).
    fn put(&mut self, p: usize, load: Option<f64>) {
        let i = p + self.size;
        self.min[i] = load.unwrap_or(f64::INFINITY);
        self.max[i] = load.unwrap_or(f64::NEG_INFINITY);
    }

    fn build(&mut self) {
        for i in (1..self.size).rev() {
            self.pull(i);
        }
    }

    fn pull(&mut self, i: usize) {
        self.min[i] = self.min[2 * i].min(self.min[2 * i + 1]);
        self.max[i] = self.max[2 * i].max(self.max[2 * i + 1]);
    }

    fn set(&mut self, p: usize, load: Option<f64>) {
        self.put(p, load);
        let mut i = (p + self.size) / 2;
        while i >= 1 {
            self.pull(i);
            i /= 2;
        }
    }

    /// The leftmost position below `end` under `node` (covering `lo..hi`)
    /// whose load is in a range and that `accept` takes.
    fn leftmost(
        &self,
        node: usize,
        lo: usize,
        hi: usize,
        end: usize,
        ranges: &[(f64, f64)],
        accept: &mut dyn FnMut(usize) -> bool,
    ) -> Option<usize> {
        if lo >= end {
            return None;
        }
        let (a, b) = (self.min[node], self.max[node]);
        if !ranges.iter().any(|&(x, y)| a <= y && b >= x) {
            return None;
        }
        if hi - lo == 1 {
            return accept(lo).then_some(lo);
        }
        let mid = (lo + hi) / 2;
        self.leftmost(2 * node, lo, mid, end, ranges, accept)
            .or_else(|| self.leftmost(2 * node + 1, mid, hi, end, ranges, accept))
    }
}

/// A load range on which adding a VM of load `v` raises power linearly:
/// from `lo` to `hi`, the increase going from `at_lo` to `at_hi` watts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece {
    pub lo: f64,
    pub hi: f64,
    pub at_lo: f64,
    pub at_hi: f64,
}

impl Piece {
    /// The least increase on the piece.
    pub fn least(&self) -> f64 {
        self.at_lo.min(self.at_hi)
    }

    /// The increase at load `x` on the piece (linear between its ends).
    pub fn at(&self, x: f64) -> f64 {
        if self.hi > self.lo {
            self.at_lo + (self.at_hi - self.at_lo) * ((x - self.lo) / (self.hi - self.lo))
        } else {
            self.at_lo
        }
    }

    /// The loads on the piece whose increase is at most `limit`, widened by
    /// rounding margins (the caller checks each host exactly).
    pub fn within(&self, limit: f64) -> Option<(f64, f64)> {
        const WATTS: f64 = 1e-9;
        const LOAD: f64 = 1e-9;
        let (lo_ok, hi_ok) = (self.at_lo <= limit + WATTS, self.at_hi <= limit + WATTS);
        match (lo_ok, hi_ok) {
            (true, true) => Some((self.lo, self.hi)),
            (false, false) => None,
            _ => {
                let t = ((limit - self.at_lo) / (self.at_hi - self.at_lo)).clamp(0.0, 1.0);
                let x = self.lo + t * (self.hi - self.lo);
                if lo_ok {
                    Some((self.lo, x + LOAD))
                } else {
                    Some((x - LOAD, self.hi))
                }
            }
        }
    }
}

/// The pieces of loads 0..=`max` on which the increase of adding a load
/// `v` to a host with `power` is linear: they end where the load or the load
/// plus `v` crosses one of the model's points.
pub(crate) fn pieces(power: &PowerModel, v: f64, max: f64, out: &mut Vec<Piece>) {
    out.clear();
    if !(max >= 0.0) {
        return;
    }
    let steps = power.points().len() - 1;
    let mut cuts: Vec<f64> = Vec::with_capacity(2 * steps + 2);
    cuts.push(0.0);
    for j in 0..=steps {
        let x = j as f64 / steps as f64;
        for c in [x, x - v] {
            if c > 0.0 && c < max {
                cuts.push(c);
            }
        }
    }
    cuts.push(max);
    cuts.sort_by(f64::total_cmp);
    cuts.dedup();
    let inc = |u: f64| power.power(u + v) - power.power(u);
    // Each cut ends one piece and starts the next: its increase is
    // computed once.
    let mut at_lo = inc(cuts[0]);
    for w in cuts.windows(2) {
        let at_hi = inc(w[1]);
        out.push(Piece {
            lo: w[0],
            hi: w[1],
            at_lo,
            at_hi,
        });
        at_lo = at_hi;
    }
    if out.is_empty() {
        // max == 0: one point.
        out.push(Piece {
            lo: 0.0,
            hi: 0.0,
            at_lo: inc(0.0),
            at_hi: inc(0.0),
        });
    }
}
