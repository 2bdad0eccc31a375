//! Hosts with VMs by kind in buckets of planned load, for the exact
//! power-aware placement (docs/MANAGER.md, "Placement"). A bucket holds the
//! hosts whose load lies in one thousandth of the load range, each entry
//! with what the increase needs (CPU load, load, power), side by side, so
//! the search reads a load range's hosts from a few short arrays. A
//! bucket's entries are ordered by (CPU load, host), so hosts of
//! bit-identical load, whose increases are identical, lie side by side
//! lowest index first and the search evaluates them once; moving a host
//! costs a search and a shift within its bucket, and empty buckets are
//! skipped with a bitmap. For LR they also keep each host's window as a
//! line (`lr_line`) beside its entry, and per bucket a summary of those
//! lines.

use crate::lr_line::{LrHost, LrSummary};

/// Buckets per kind, over loads 0..=1 (loads outside go to the end ones).
pub(crate) const BUCKETS: usize = 1000;
const WORDS: usize = BUCKETS.div_ceil(64);
/// Buckets per block: with LR, a summary per block lets the search pass
/// a run of buckets that LR refuses whole at once.
pub(crate) const BLOCK: usize = 32;
const BLOCKS: usize = BUCKETS.div_ceil(BLOCK);

/// One host in a bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// CPU load (the allocation's), load (CPU load / capacity), and power
    /// at that load (W).
    pub cpu: f64,
    pub load: f64,
    pub power: f64,
    pub host: u32,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct LoadBuckets {
    /// Kind k's bucket b is `entries[k * BUCKETS + b]`.
    entries: Vec<Vec<Entry>>,
    /// Kind k's non-empty buckets: bit b of `full[k * WORDS + b / 64]`.
    full: Vec<u64>,
    /// Each kind's CPU capacity.
    caps: Vec<f64>,
    /// Per host: its bucket list and CPU load (its entry's key) while it
    /// is in a bucket.
    at: Vec<Option<(u32, f64)>>,
    kind: Vec<usize>,
    /// With LR: each entry's line (same list and position), each list's
    /// summary, and each block's (kind k's block i is `k * BLOCKS + i`).
    keep_lr: bool,
    lr: Vec<Vec<LrHost>>,
    lr_summary: Vec<LrSummary>,
    lr_block: Vec<LrSummary>,
}

/// The bucket of load `u` (NaN and negative loads go to the first).
pub(crate) fn bucket_of(u: f64) -> usize {
    ((u * BUCKETS as f64) as usize).min(BUCKETS - 1)
}

impl LoadBuckets {
    /// Empties the buckets: `kind[h]` is host h's kind, `caps[k]` kind k's
    /// CPU capacity; `keep_lr`: each host comes with its LR line.
    pub fn reset(&mut self, kind: &[usize], caps: &[f64], keep_lr: bool) {
        self.keep_lr = keep_lr;
        let lists = if keep_lr { caps.len() * BUCKETS } else { 0 };
        self.lr.resize_with(lists, Vec::new);
        self.lr.truncate(lists);
        for list in &mut self.lr {
            list.clear();
        }
        self.lr_summary.clear();
        self.lr_summary.resize(lists, LrSummary::default());
        self.lr_block.clear();
        let blocks = if keep_lr { caps.len() * BLOCKS } else { 0 };
        self.lr_block.resize(blocks, LrSummary::default());
        self.kind.clear();
        self.kind.extend_from_slice(kind);
        self.caps.clear();
        self.caps.extend_from_slice(caps);
        self.entries.resize_with(caps.len() * BUCKETS, Vec::new);
        self.entries.truncate(caps.len() * BUCKETS);
        for list in &mut self.entries {
            list.clear();
        }
        self.full.clear();
        self.full.resize(caps.len() * WORDS, 0);
        self.at.clear();
        self.at.resize(kind.len(), None);
    }

    /// Kind `k`'s CPU capacity.
    pub fn cap(&self, k: usize) -> f64 {
        self.caps[k]
    }

    /// Kind `k`'s hosts in bucket `b`, ordered by (CPU load's bits, host):
    /// hosts of equal load side by side, lowest index first.
    pub fn bucket(&self, k: usize, b: usize) -> &[Entry] {
        &self.entries[k * BUCKETS + b]
    }

    /// Whether the buckets keep LR lines.
    pub fn keeps_lr(&self) -> bool {
        self.keep_lr
    }

    /// Kind `k`'s LR lines in bucket `b`, in the order of `bucket(k, b)`,
    /// and their summary (only while `keeps_lr`).
    pub fn lr_bucket(&self, k: usize, b: usize) -> (&[LrHost], &LrSummary) {
        let list = k * BUCKETS + b;
        (&self.lr[list], &self.lr_summary[list])
    }

    /// The summary of kind `k`'s LR lines in bucket `b`'s block (buckets
    /// `b / BLOCK * BLOCK` to the next multiple of `BLOCK`; only while
    /// `keeps_lr`).
    pub fn lr_block(&self, k: usize, b: usize) -> &LrSummary {
        &self.lr_block[k * BLOCKS + b / BLOCK]
    }

    /// Kind `k`'s first non-empty bucket from `b` towards `end` (excluded)
    /// in steps of `step` (1 or -1), or `end`.
    pub fn next_full(&self, k: usize, b: isize, end: isize, step: isize) -> isize {
        let words = &self.full[k * WORDS..(k + 1) * WORDS];
        let mut b = b;
        while b != end {
            let (w, bit) = (b as usize / 64, b as usize % 64);
            let rest = if step > 0 {
                words[w] >> bit
            } else {
                words[w] << (63 - bit)
            };
            if rest == 0 {
                // On to the next word.
                b = if step > 0 {
                    ((w + 1) * 64) as isize
                } else {
                    (w * 64) as isize - 1
                };
                if (step > 0 && b >= end) || (step < 0 && b <= end) {
                    return end;
                }
                continue;
            }
            let found = if step > 0 {
                b + rest.trailing_zeros() as isize
            } else {
                b - rest.leading_zeros() as isize
            };
            if (step > 0 && found >= end) || (step < 0 && found <= end) {
                return end;
            }
            return found;
        }
        end
    }

    /// Host `h` now has CPU load `cpu` and power `power` (`None`: no VM, in
    /// no bucket), and LR line `lr` when the buckets keep them.
    pub fn set(&mut self, h: usize, now: Option<(f64, f64)>, lr: Option<LrHost>) {
        if let Some((list, cpu)) = self.at[h].take() {
            let list = list as usize;
            let entries = &mut self.entries[list];
            let pos = position(entries, cpu, h);
            debug_assert_eq!(entries.get(pos).map(|e| e.host as usize), Some(h));
            entries.remove(pos);
            if self.keep_lr {
                let lines = &mut self.lr[list];
                lines.remove(pos);
                // A least cannot be taken back: the summaries are redone.
                let mut sum = LrSummary::default();
                lines.iter().for_each(|l| sum.add(l));
                self.lr_summary[list] = sum;
                let (k, b) = (list / BUCKETS, list % BUCKETS);
                let first = k * BUCKETS + b / BLOCK * BLOCK;
                let last = (first + BLOCK).min((k + 1) * BUCKETS);
                let mut block = LrSummary::default();
                self.lr_summary[first..last]
                    .iter()
                    .for_each(|s| block.merge(s));
                self.lr_block[k * BLOCKS + b / BLOCK] = block;
            }
            if entries.is_empty() {
                self.full[list / BUCKETS * WORDS + list % BUCKETS / 64] &=
                    !(1 << (list % BUCKETS % 64));
            }
        }
        if let Some((cpu, power)) = now {
            let k = self.kind[h];
            let load = cpu / self.caps[k];
            let b = bucket_of(load);
            let list = k * BUCKETS + b;
            let entries = &mut self.entries[list];
            let pos = position(entries, cpu, h);
            self.at[h] = Some((list as u32, cpu));
            entries.insert(
                pos,
                Entry {
                    cpu,
                    load,
                    power,
                    host: h as u32,
                },
            );
            if self.keep_lr {
                debug_assert!(lr.is_some(), "an LR line for host {h}");
                let line = lr.unwrap_or(LrHost {
                    line: crate::lr_line::LrLine::UNKNOWN,
                    at: f64::NAN,
                    zero_tail: false,
                });
                self.lr[list].insert(pos, line);
                self.lr_summary[list].add(&line);
                self.lr_block[k * BLOCKS + b / BLOCK].add(&line);
            }
            self.full[k * WORDS + b / 64] |= 1 << (b % 64);
        }
    }
}

/// Where host `h` with CPU load `cpu` is or goes in a bucket's entries
/// (ordered by the load's bits, then the host).
fn position(entries: &[Entry], cpu: f64, h: usize) -> usize {
    let key = (cpu.to_bits(), h as u32);
    entries.partition_point(|e| (e.cpu.to_bits(), e.host) < key)
}

/// The end of the run of entries from `i` on with the load of entry `i`
/// (hosts of bit-identical load: one increase for all).
pub(crate) fn run_end(entries: &[Entry], i: usize) -> usize {
    let bits = entries[i].cpu.to_bits();
    let rest = &entries[i + 1..];
    i + 1 + rest.iter().take_while(|e| e.cpu.to_bits() == bits).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(b: &LoadBuckets, k: usize, i: usize) -> Vec<u32> {
        let mut v: Vec<u32> = b.bucket(k, i).iter().map(|e| e.host).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn hosts_move_between_buckets() {
        let mut b = LoadBuckets::default();
        b.reset(&[0, 1, 0, 0], &[100.0, 200.0], false);
        b.set(0, Some((10.0, 1.0)), None);
        b.set(1, Some((10.0, 1.0)), None);
        b.set(3, Some((10.05, 1.0)), None);
        assert_eq!(hosts(&b, 0, 100), vec![0, 3]);
        assert_eq!(hosts(&b, 1, 50), vec![1]);
        b.set(0, Some((99.99, 1.0)), None);
        b.set(2, Some((-1e-12, 1.0)), None);
        assert_eq!(hosts(&b, 0, 100), vec![3]);
        assert_eq!(hosts(&b, 0, 999), vec![0]);
        assert_eq!(hosts(&b, 0, 0), vec![2]);
        b.set(3, None, None);
        b.set(0, Some((150.0, 1.0)), None);
        assert!(b.bucket(0, 100).is_empty());
        assert_eq!(hosts(&b, 0, 999), vec![0]);
        b.set(0, None, None);
        assert!(b.bucket(0, 999).is_empty());
    }

    #[test]
    fn empty_buckets_are_skipped_both_ways() {
        let mut b = LoadBuckets::default();
        b.reset(&[0, 0, 0, 1], &[1000.0, 1000.0], false);
        // Buckets 3, 64, 130 of kind 0; 500 of kind 1.
        for (h, cpu) in [(0, 3.5), (1, 64.2), (2, 130.0), (3, 500.0)] {
            b.set(h, Some((cpu, 0.0)), None);
        }
        let full: Vec<isize> = (0..BUCKETS as isize)
            .filter(|&i| !b.bucket(0, i as usize).is_empty())
            .collect();
        assert_eq!(full, vec![3, 64, 130]);
        for from in 0..BUCKETS as isize {
            for end in [BUCKETS as isize, 100, 131, 64, 3] {
                let up = full
                    .iter()
                    .copied()
                    .find(|&i| i >= from && i < end)
                    .unwrap_or(end);
                if from < end {
                    assert_eq!(b.next_full(0, from, end, 1), up, "{from} up to {end}");
                }
            }
            for end in [-1, 2, 3, 63, 129] {
                let down = full
                    .iter()
                    .rev()
                    .copied()
                    .find(|&i| i <= from && i > end)
                    .unwrap_or(end);
                if from > end {
                    assert_eq!(b.next_full(0, from, end, -1), down, "{from} down to {end}");
                }
            }
        }
        assert_eq!(b.next_full(1, 0, BUCKETS as isize, 1), 500);
        b.set(1, None, None);
        assert_eq!(b.next_full(0, 4, BUCKETS as isize, 1), 130);
    }

    use crate::lr_line::LrLine;

    #[test]
    fn equal_loads_lie_side_by_side_and_summaries_stay_whole() {
        let mut b = LoadBuckets::default();
        let kinds: Vec<usize> = (0..60).map(|h| h % 2).collect();
        b.reset(&kinds, &[100.0, 200.0], true);
        // A few loads only, so that many hosts share one; each host's LR
        // line carries its index, to follow it.
        let loads = [10.0, 10.0 + 1e-12, 10.05, 55.5, 99.0];
        let mut model: Vec<Option<f64>> = vec![None; kinds.len()];
        let mut x: u64 = 7;
        for step in 0..4000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let h = (x >> 33) as usize % kinds.len();
            let now =
                (!(x >> 20).is_multiple_of(6)).then(|| loads[(x >> 40) as usize % loads.len()]);
            let line = if h % 11 == 5 {
                LrLine::UNKNOWN
            } else {
                let a = h as f64 / 64.0;
                let b = (h % 7) as f64 / 1000.0;
                LrLine {
                    a,
                    b,
                    abs_a: 2.0 * a,
                    abs_b: b,
                }
            };
            b.set(
                h,
                now.map(|c| (c, 1.0)),
                now.map(|_| LrHost {
                    line,
                    at: 10.0 + (h % 3) as f64,
                    zero_tail: false,
                }),
            );
            model[h] = now;
            for k in 0..2 {
                for i in 0..BUCKETS {
                    let entries = b.bucket(k, i);
                    let keys: Vec<(u64, u32)> =
                        entries.iter().map(|e| (e.cpu.to_bits(), e.host)).collect();
                    assert!(keys.is_sorted(), "step {step}: kind {k} bucket {i}");
                    let (lines, _) = b.lr_bucket(k, i);
                    for (e, l) in entries.iter().zip(lines) {
                        assert_eq!(model[e.host as usize], Some(e.cpu));
                        let host = e.host as usize;
                        let a = if host % 11 == 5 { None } else { Some(l.line.a) };
                        assert_eq!(a, (host % 11 != 5).then(|| host as f64 / 64.0));
                    }
                    assert_eq!(lines.len(), entries.len());
                    let mut j = 0;
                    while j < entries.len() {
                        let end = run_end(entries, j);
                        assert!(entries[j..end].iter().all(|e| e.cpu == entries[j].cpu));
                        assert!(entries.get(end).is_none_or(|e| e.cpu != entries[j].cpu));
                        j = end;
                    }
                }
            }
            for k in 0..2 {
                for first in (0..BUCKETS).step_by(BLOCK) {
                    let mut want = LrSummary::default();
                    for i in first..(first + BLOCK).min(BUCKETS) {
                        b.lr_bucket(k, i).0.iter().for_each(|l| want.add(l));
                    }
                    assert_eq!(*b.lr_block(k, first), want, "step {step}: block {first}");
                }
            }
            let held: usize = (0..2 * BUCKETS)
                .map(|l| b.bucket(l / BUCKETS, l % BUCKETS).len())
                .sum();
            assert_eq!(held, model.iter().flatten().count());
        }
    }
}
