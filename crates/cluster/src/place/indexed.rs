//! Power-aware placement through the host index, under a tie tolerance:
//! the same choice as the scan (the lowest index among the hosts whose
//! increase is within the tolerance of the least) without evaluating every
//! host (docs/MANAGER.md, "Placement").

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::btree_set::Range;
use std::ops::Bound;

use super::PlaceCandidate;
use crate::allocation::Allocation;
use crate::config::Model;
use crate::detect::Detector;
use crate::index::{self, HostIndex, Load, Piece};
use crate::model::PoolView;
use crate::planner::Planner;

/// A piece's hosts in load order, and whether it is walked upwards.
type Cursor<'a> = (Range<'a, (Load, usize)>, bool);

/// What the search takes next: a host with its increase, or a piece not
/// opened yet keyed by the least increase it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Next {
    at: PlaceCandidate,
    piece: usize,
}

impl Planner<'_> {
    /// `least_power` with the index (Ferry model): the least increase is
    /// found walking each load piece from its cheaper end, the detector
    /// checked lazily in increase order; then the lowest index within the
    /// tolerance is searched in the load ranges whose increase may be in it.
    pub(super) fn least_power_indexed(
        &mut self,
        v: usize,
        excluded: &[bool],
        empties: Option<&[Vec<usize>]>,
    ) -> Option<usize> {
        let view = self.view;
        let alloc = &*self.alloc;
        let count = &*self.count;
        let index = alloc.index()?;
        let detector = &self.config.detector;
        let threshold = matches!(detector, Detector::Threshold { .. });
        let model = Model::Ferry;
        let demand = view.vms[v].cpu_demand;
        // The checks every candidate with VMs passes, the detector aside
        // unless it is a threshold (as cheap as the others).
        let usable = |h: usize| {
            !excluded[h]
                && count.can_start(h)
                && alloc.fits(view, v, h, model)
                && (!threshold || !alloc.overloaded(view, detector, h, Some(v)))
        };
        let delta = |h: usize| alloc.power_delta(view, v, h, model);

        // Empty hosts of one kind are interchangeable: the first usable one.
        let mut best: Option<PlaceCandidate> = None;
        let mut spare: Vec<PlaceCandidate> = Vec::new();
        for list in empties.unwrap_or(&[]) {
            if let Some(h) = super::first_empty(list, excluded, alloc, count)
                && alloc.fits(view, v, h, model)
            {
                let c = PlaceCandidate { delta: delta(h), h };
                spare.push(c);
                best = Some(best.map_or(c, |b| b.min(c)));
            }
        }

        let pieces = kind_pieces(view, alloc, demand, detector);
        // A piece's hosts in load order from its cheaper end; the first
        // piece of a kind also takes loads below 0 (rounding).
        let open = |i: usize| {
            let (k, p) = pieces[i];
            let first = i == 0 || pieces[i - 1].0 != k;
            let last = i + 1 == pieces.len() || pieces[i + 1].0 != k;
            let from = if first {
                Bound::Unbounded
            } else {
                Bound::Included(p.lo)
            };
            let to = if last {
                Bound::Included(p.hi)
            } else {
                Bound::Excluded(p.hi)
            };
            (index.range(k, from, to), p.at_lo <= p.at_hi)
        };
        let mut cursors: Vec<Option<Cursor<'_>>> = vec![None; pieces.len()];
        let mut heap: BinaryHeap<Reverse<Next>> = pieces
            .iter()
            .enumerate()
            .map(|(i, (_, p))| {
                Reverse(Next {
                    // Before any host of the same increase: index 0.
                    at: PlaceCandidate {
                        delta: p.least() - 1e-9,
                        h: 0,
                    },
                    piece: i,
                })
            })
            .collect();
        // Hosts the detector refused (not to be checked twice).
        let mut rejected: Vec<usize> = Vec::new();
        while let Some(Reverse(next)) = heap.pop() {
            if best.is_some_and(|b| b <= next.at) {
                break;
            }
            let opened = cursors[next.piece].is_some();
            if opened {
                if threshold || !alloc.overloaded(view, detector, next.at.h, Some(v)) {
                    best = Some(next.at);
                    break;
                }
                rejected.push(next.at.h);
            }
            let i = next.piece;
            let (range, up) = cursors[i].get_or_insert_with(|| open(i));
            let head = if *up {
                range.find(|&&(_, h)| usable(h))
            } else {
                range.rev().find(|&&(_, h)| usable(h))
            };
            if let Some(&(_, h)) = head {
                heap.push(Reverse(Next {
                    at: PlaceCandidate { delta: delta(h), h },
                    piece: i,
                }));
            }
        }
        let best = best?;

        // The lowest index within the tolerance.
        let limit = best.delta + self.config.tie_tolerance_w;
        rejected.sort_unstable();
        let mut answer = best.h;
        for c in spare {
            if c.delta <= limit && c.h < answer {
                answer = c.h;
            }
        }
        let accept = |h: usize| {
            delta(h) <= limit
                && usable(h)
                && rejected.binary_search(&h).is_err()
                && (threshold || !alloc.overloaded(view, detector, h, Some(v)))
        };
        if let Some(h) = lowest_within(index, &pieces, limit, answer, accept) {
            answer = h;
        }
        Some(answer)
    }
}

/// Each kind's load pieces for a VM of `demand`, up to the most load it
/// fits on and, with a threshold, the most it leaves a host under it
/// (margins: the checks on each host decide).
pub(super) fn kind_pieces(
    view: &PoolView,
    alloc: &Allocation,
    demand: f64,
    detector: &Detector,
) -> Vec<(usize, Piece)> {
    let mut pieces = Vec::new();
    kind_pieces_into(view, alloc, demand, detector, &mut pieces);
    pieces
}

/// `kind_pieces` into `pieces`.
pub(super) fn kind_pieces_into(
    view: &PoolView,
    alloc: &Allocation,
    demand: f64,
    detector: &Detector,
    pieces: &mut Vec<(usize, Piece)>,
) {
    pieces.clear();
    let mut buf = Vec::new();
    for k in 0..alloc.kinds() {
        let host = &view.hosts[alloc.rep(k)];
        let power = &view.power_models[host.power_model];
        let cap = host.cpu_capacity;
        let mut max = (cap + 1e-9 - demand) / cap + 1e-12;
        if let Detector::Threshold { threshold } = *detector {
            max = max.min(threshold - demand / cap + 1e-12);
        }
        index::pieces(power, demand / cap, max, &mut buf);
        pieces.extend(buf.iter().map(|&p| (k, p)));
    }
}

/// The lowest host index below `before` whose load lies where a piece's
/// increase may be at most `limit` and that `accept`s.
fn lowest_within(
    index: &HostIndex,
    pieces: &[(usize, Piece)],
    limit: f64,
    before: usize,
    mut accept: impl FnMut(usize) -> bool,
) -> Option<usize> {
    let mut found = None;
    let mut ranges: Vec<(f64, f64)> = Vec::new();
    for kind in pieces.chunk_by(|a, b| a.0 == b.0) {
        ranges.clear();
        for (i, (_, p)) in kind.iter().enumerate() {
            if let Some((lo, hi)) = p.within(limit) {
                // The first piece also takes loads below 0 (rounding).
                ranges.push((if i == 0 { f64::NEG_INFINITY } else { lo }, hi));
            }
        }
        if ranges.is_empty() {
            continue;
        }
        let bound = found.unwrap_or(before);
        if let Some(h) = index.lowest(kind[0].0, bound, &ranges, &mut accept) {
            found = Some(h);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use crate::allocation::{Allocation, HostSearch};
    use crate::config::{Config, Model};
    use crate::detect::Detector;
    use crate::index::Piece;
    use crate::limits::{MigrationCount, MigrationLimits};
    use crate::model::{HostInfo, PoolView, PowerModel, VmInfo};
    use crate::pattern::Pattern;
    use crate::place::PieceCache;
    use crate::planner::Planner;
    use crate::select::Selector;

    /// What a seeded pool's VMs look like.
    #[derive(Clone, Copy, PartialEq)]
    enum Shape {
        /// Demands and histories at random.
        Fine,
        /// Demands from a few values.
        Coarse,
        /// Histories mostly zeros, some shorter than LR's window (hosts
        /// whose history falls back on LR's threshold, or whose window's
        /// oldest value is 0).
        Sparse,
        /// A pool of coarse demands copied several times over: many hosts
        /// of bit-identical load and history, whose increases are equal.
        Copies,
    }

    /// A seeded pool: G4 and G5 hosts, VMs spread on about two thirds of
    /// them, with random demands and histories; some hosts have a tiny
    /// overhead, so that increases differ by little more than rounding.
    /// With coarse demands many hosts have equal loads and many increases
    /// are equal or nearly so.
    fn pool(rng: &mut ChaCha8Rng, hosts: usize, shape: Shape) -> PoolView {
        if shape == Shape::Copies {
            return copies(pool(rng, hosts / 8, Shape::Coarse), 8);
        }
        let coarse = shape == Shape::Coarse;
        let hosts: Vec<HostInfo> = (0..hosts)
            .map(|i| {
                let g5 = rng.random_bool(0.5);
                HostInfo {
                    id: i as u64,
                    cpu_capacity: if g5 { 5320.0 } else { 3720.0 },
                    core_capacity: if g5 { 2660.0 } else { 1860.0 },
                    ram_mb: 4096.0,
                    net_mbps: 1000.0,
                    cpu_overhead: [0.0, 0.0, 1e-10, 1e-7][rng.random_range(0..4)],
                    power_model: g5 as usize,
                    on: true,
                }
            })
            .collect();
        let mut load = vec![0.0; hosts.len()];
        let mut vms = Vec::new();
        for id in 0..hosts.len() as u64 * 2 {
            let h = rng.random_range(0..hosts.len());
            if h % 3 == 0 {
                continue;
            }
            let demand = if coarse {
                [50.0, 186.0, 266.0, 372.0, 532.0][rng.random_range(0..5)]
            } else {
                rng.random_range(0.0..1.0f64).powi(2) * 1500.0
            };
            if load[h] + demand > hosts[h].cpu_capacity * 0.95 {
                continue;
            }
            load[h] += demand;
            let history = match shape {
                Shape::Sparse => {
                    let len = [3, 9, 10, 12, 30][rng.random_range(0..5)];
                    let zero = |r: &mut ChaCha8Rng| r.random_bool(0.7);
                    (0..len)
                        .map(|_| {
                            if zero(rng) {
                                0.0
                            } else {
                                rng.random_range(0.0..1.0)
                            }
                        })
                        .collect()
                }
                _ => (0..30).map(|_| rng.random_range(0.0..1.0)).collect(),
            };
            vms.push(VmInfo {
                id,
                host: h,
                cpu_size: 2500.0,
                cores: 1,
                cpu_demand: demand,
                ram_mb: rng.random_range(300.0..900.0),
                net_mbps: 0.0,
                history,
                migrating_to: None,
                dirty_rate_mb_s: None,
            });
        }
        PoolView {
            time_s: 0.0,
            interval_s: 300.0,
            migration_bw_share: 0.5,
            default_bandwidth_mbps: 1000.0,
            power_models: vec![PowerModel::hp_ml110_g4(), PowerModel::hp_ml110_g5()],
            hosts,
            vms,
        }
    }

    /// `view` with its hosts and their VMs repeated `k` times, copy by copy.
    fn copies(view: PoolView, k: usize) -> PoolView {
        let n = view.hosts.len();
        let mut hosts = Vec::new();
        let mut vms = Vec::new();
        for copy in 0..k {
            for h in &view.hosts {
                let mut h = h.clone();
                h.id += (copy * n) as u64;
                hosts.push(h);
            }
            for vm in &view.vms {
                let mut vm = vm.clone();
                vm.id += (copy * view.vms.len()) as u64;
                vm.host += copy * n;
                vms.push(vm);
            }
        }
        PoolView { hosts, vms, ..view }
    }

    fn config(detector: Detector, tolerance: f64) -> Config {
        Config {
            detector,
            selector: Selector::MinMigrationTime,
            pattern: Pattern::Consolidate,
            coldspot_below: None,
            limits: MigrationLimits {
                per_host: Some(3),
                ..MigrationLimits::default()
            },
            model: Model::Ferry,
            tie_tolerance_w: tolerance,
        }
    }

    /// Moves VMs one by one, each placed by a scan and by the index or,
    /// without a tolerance, the buckets (on allocations kept side by side):
    /// both must choose the same host.
    fn same_as_scan(seed: u64, detector: Detector, tolerance: f64, shape: Shape) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let view = pool(&mut rng, 120, shape);
        let config = config(detector, tolerance);
        let n = view.hosts.len();
        let (mut scan, mut fast) = (Allocation::default(), Allocation::default());
        scan.reset(&view, HostSearch::Scan, &config);
        let search = if tolerance > 0.0 {
            HostSearch::Tolerant
        } else {
            HostSearch::Buckets
        };
        fast.reset(&view, search, &config);
        assert!(scan.index().is_none() && scan.buckets().is_none());
        match search {
            HostSearch::Tolerant => assert!(fast.index().is_some()),
            _ => assert!(fast.buckets().is_some()),
        }
        let mut count = MigrationCount::default();
        count.reset(&view, config.limits);
        let mut buf = Vec::new();
        // One plan's cache of pieces, over every placement (the view does not change).
        let mut pieces = PieceCache::default();
        let mut differ = 0;
        for step in 0..300 {
            let v = rng.random_range(0..view.vms.len());
            let from = (0..n)
                .find(|&h| scan.vms_on(h).contains(&v))
                .expect("placed");
            let excluded: Vec<bool> = (0..n).map(|h| h == from || rng.random_bool(0.1)).collect();
            scan.remove(&view, v, from);
            fast.remove(&view, v, from);
            let among: Vec<usize> = (0..n).filter(|&h| scan.active(h)).collect();
            let mut empties = vec![Vec::new(); scan.kinds()];
            for h in (0..n).filter(|&h| !scan.active(h)) {
                empties[scan.kind(h)].push(h);
            }
            let empties = (step % 2 == 0).then_some(&empties[..]);
            let mut pick = |alloc: &mut Allocation, count: &mut MigrationCount| {
                Planner {
                    view: &view,
                    config: &config,
                    alloc,
                    count,
                    candidates: &mut buf,
                    waiting: &mut Vec::new(),
                    pieces: &mut pieces,
                }
                .least_power(v, &excluded, &among, empties)
            };
            let a = pick(&mut scan, &mut count);
            let b = pick(&mut fast, &mut count);
            assert_eq!(a, b, "seed {seed} step {step}: VM {v} from host {from}");
            differ += usize::from(a != Some(from));
            let to = a.unwrap_or(from);
            scan.add(&view, v, to);
            fast.add(&view, v, to);
            if to != from {
                count.add(from, to);
            }
        }
        assert!(differ > 100, "the moves exercise the index ({differ})");
    }

    #[test]
    fn index_chooses_the_host_a_scan_chooses() {
        for seed in 0..6 {
            for tolerance in [0.0, 1e-6, 0.05, 0.7, 4.0] {
                same_as_scan(
                    seed,
                    Detector::Threshold { threshold: 0.8 },
                    tolerance,
                    Shape::Fine,
                );
                let lr = Detector::Lr {
                    safety: 1.2,
                    fallback: 0.7,
                };
                same_as_scan(seed, lr, tolerance, Shape::Fine);
            }
        }
    }

    #[test]
    fn buckets_choose_the_host_a_scan_chooses_among_near_ties() {
        for seed in 0..12 {
            for shape in [Shape::Fine, Shape::Coarse, Shape::Sparse, Shape::Copies] {
                same_as_scan(seed, Detector::Threshold { threshold: 0.9 }, 0.0, shape);
                let lr = Detector::Lr {
                    safety: 1.2,
                    fallback: 0.7,
                };
                same_as_scan(seed, lr, 0.0, shape);
                let mad = Detector::Mad {
                    safety: 2.5,
                    fallback: 0.7,
                };
                same_as_scan(seed, mad, 0.0, shape);
            }
        }
    }

    #[test]
    fn cached_pieces_are_the_pieces() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let view = pool(&mut rng, 40, Shape::Fine);
        let mut alloc = Allocation::default();
        let config = config(Detector::Threshold { threshold: 0.8 }, 0.0);
        alloc.reset(&view, HostSearch::Scan, &config);
        // More demands than slots, each drawn many times, zero among them.
        let demands: Vec<f64> = (0..150)
            .map(|i| {
                if i == 0 {
                    0.0
                } else {
                    rng.random_range(0.0..2500.0)
                }
            })
            .collect();
        let mut cache = PieceCache::default();
        for _ in 0..3000 {
            let d = demands[rng.random_range(0..demands.len())];
            let want = super::kind_pieces(&view, &alloc, d, &config.detector);
            let got = cache.get(&view, &alloc, d, &config.detector);
            let bits = |p: &[(usize, Piece)]| -> Vec<(usize, [u64; 4])> {
                p.iter()
                    .map(|(k, p)| (*k, [p.lo, p.hi, p.at_lo, p.at_hi].map(f64::to_bits)))
                    .collect()
            };
            assert_eq!(bits(got), bits(&want), "demand {d}");
        }
    }

    #[test]
    fn tolerance_zero_is_the_exact_rule() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let view = pool(&mut rng, 80, Shape::Fine);
        let config = config(Detector::Threshold { threshold: 0.9 }, 0.0);
        let n = view.hosts.len();
        let mut alloc = Allocation::default();
        alloc.reset(&view, HostSearch::Scan, &config);
        assert!(alloc.index().is_none());
        let mut count = MigrationCount::default();
        count.reset(&view, config.limits);
        let mut buf = Vec::new();
        let among: Vec<usize> = (0..n).filter(|&h| alloc.active(h)).collect();
        let excluded = vec![false; n];
        for v in 0..view.vms.len() {
            // The least (increase, index) by brute force.
            let want = among
                .iter()
                .copied()
                .filter(|&h| {
                    alloc.fits(&view, v, h, Model::Ferry)
                        && !alloc.overloaded(&view, &config.detector, h, Some(v))
                })
                .map(|h| (alloc.power_delta(&view, v, h, Model::Ferry), h))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                .map(|(_, h)| h);
            let got = Planner {
                view: &view,
                config: &config,
                alloc: &mut alloc,
                count: &mut count,
                candidates: &mut buf,
                waiting: &mut Vec::new(),
                pieces: &mut PieceCache::default(),
            }
            .least_power(v, &excluded, &among, None);
            assert_eq!(got, want, "VM {v}");
        }
    }
}
