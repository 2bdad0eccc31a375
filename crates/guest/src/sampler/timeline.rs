//! What a sampler saw, kept compactly, and the rule that turns it into a
//! guest-visible downtime. Pure logic on host times in nanoseconds, so it
//! is tested on synthetic timelines.

use crate::status::VcpuSlot;

/// A run of consecutive samples that all saw progress, or all none, is cut
/// after this long (ns), so the largest sample interval is known to this
/// precision at the edges of any window chosen later.
const RUN_SPAN_NS: u64 = 1_000_000;

/// The progress rule, shared by both sides of a migration: a vCPU made
/// progress when its pass counter is above the highest value ever seen for
/// it on either side. Pages copied to the destination carry counters the
/// source already showed, so they never count; only the guest running does.
#[derive(Debug, Clone, Default)]
pub struct Highest {
    passes: Vec<u64>,
    long_gaps: Vec<u64>,
}

/// What one side's slots showed against [`Highest`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// Some vCPU's pass counter rose above its highest.
    pub progress: bool,
    /// The longest of the long gaps (TSC ticks) recorded for the first time.
    pub new_long_gap_ticks: Option<u64>,
}

impl Highest {
    /// Applies one side's `slots` (vCPU 0 first).
    pub fn observe(&mut self, slots: &[VcpuSlot]) -> Observed {
        if self.passes.len() < slots.len() {
            self.passes.resize(slots.len(), 0);
            self.long_gaps.resize(slots.len(), 0);
        }
        let mut seen = Observed::default();
        for (i, s) in slots.iter().enumerate() {
            if s.passes > self.passes[i] {
                self.passes[i] = s.passes;
                seen.progress = true;
            }
            if s.long_gaps > self.long_gaps[i] {
                self.long_gaps[i] = s.long_gaps;
                seen.new_long_gap_ticks = seen.new_long_gap_ticks.max(Some(s.long_gap_ticks));
            }
        }
        seen
    }
}

/// Consecutive samples with the same progress flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first: u64,
    last: u64,
    /// The interval from the sample before (0 for the very first).
    entry: u64,
    /// The widest interval between two samples inside the run.
    widest: u64,
    progress: bool,
}

/// Sample times and whether each saw progress, as runs (a few bytes per
/// millisecond however fast the sampler reads).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    runs: Vec<Run>,
}

impl Timeline {
    /// Adds a sample taken at `t` (ns, not before the previous one).
    pub fn push(&mut self, t: u64, progress: bool) {
        if let Some(r) = self.runs.last_mut() {
            let t = t.max(r.last);
            if r.progress == progress && t - r.first < RUN_SPAN_NS {
                r.widest = r.widest.max(t - r.last);
                r.last = t;
                return;
            }
            let entry = t - r.last;
            self.runs.push(Run {
                first: t,
                last: t,
                entry,
                widest: 0,
                progress,
            });
            return;
        }
        self.runs.push(Run {
            first: t,
            last: t,
            entry: 0,
            widest: 0,
            progress,
        });
    }

    /// Time of the first and of the last sample.
    pub fn span(&self) -> Option<(u64, u64)> {
        Some((self.runs.first()?.first, self.runs.last()?.last))
    }

    /// The longest time within `[from, until]` in which no sample saw
    /// progress: from one sample that saw progress to the next that did
    /// (or to the window's edge), clipped to the window.
    pub fn longest_quiet(&self, from: u64, until: u64) -> u64 {
        self.longest_quiet_at(from, until).1
    }

    /// [`Timeline::longest_quiet`] with where it began: (start, length).
    pub fn longest_quiet_at(&self, from: u64, until: u64) -> (u64, u64) {
        let Some((start, end)) = self.span() else {
            return (from, 0);
        };
        let clip = |a: u64, b: u64| (a.max(from), b.min(until).saturating_sub(a.max(from)));
        let mut longest = (from, 0);
        let mut better = |q: (u64, u64)| {
            if q.1 > longest.1 {
                longest = q;
            }
        };
        // With no progress before, the quiet time starts at the first sample.
        let mut prev = start;
        for r in self.runs.iter().filter(|r| r.progress) {
            better(clip(prev, r.first));
            if r.last >= from && r.first <= until {
                // Somewhere inside the run; its start is as close as known.
                better((r.first.max(from), r.widest));
            }
            prev = r.last;
        }
        better(clip(prev, end));
        longest
    }

    /// The widest interval between two consecutive samples that overlaps
    /// `[from, until]`: how precisely [`Timeline::longest_quiet`] is known.
    pub fn widest_interval(&self, from: u64, until: u64) -> u64 {
        let mut widest = 0;
        for r in &self.runs {
            if r.first > from && r.first - r.entry < until {
                widest = widest.max(r.entry);
            }
            if r.last >= from && r.first <= until {
                widest = widest.max(r.widest);
            }
        }
        widest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;

    /// Samples every `step` from `from` to `until` (excluded).
    fn samples(t: &mut Timeline, from: u64, until: u64, step: u64, progress: bool) {
        let mut x = from;
        while x < until {
            t.push(x, progress);
            x += step;
        }
    }

    fn slot(passes: u64) -> VcpuSlot {
        VcpuSlot {
            passes,
            ..VcpuSlot::default()
        }
    }

    #[test]
    fn copies_of_old_counters_never_count() {
        let mut h = Highest::default();
        assert!(h.observe(&[slot(10), slot(5)]).progress);
        // The destination holds a copy taken earlier: not progress.
        assert!(!h.observe(&[slot(8), slot(5)]).progress);
        assert!(!h.observe(&[slot(10), slot(0)]).progress);
        // One vCPU moving is enough.
        assert!(h.observe(&[slot(10), slot(6)]).progress);
        // The source stopped at 10/6; the destination resumes from its copy.
        assert!(!h.observe(&[slot(10), slot(6)]).progress);
        assert!(h.observe(&[slot(11), slot(6)]).progress);
    }

    #[test]
    fn long_gaps_are_new_once() {
        let mut h = Highest::default();
        let gap = |n, ticks| VcpuSlot {
            long_gaps: n,
            long_gap_ticks: ticks,
            ..VcpuSlot::default()
        };
        assert_eq!(h.observe(&[gap(0, 0)]).new_long_gap_ticks, None);
        assert_eq!(h.observe(&[gap(1, 500)]).new_long_gap_ticks, Some(500));
        // The same record on the other side (a copied page) is not new.
        assert_eq!(h.observe(&[gap(1, 500)]).new_long_gap_ticks, None);
        assert_eq!(
            h.observe(&[gap(2, 90), gap(1, 700)]).new_long_gap_ticks,
            Some(700)
        );
    }

    #[test]
    fn the_switchover_gap_is_the_longest_quiet_time() {
        let mut t = Timeline::default();
        // The source runs until 1 s, the destination from 1.030 s; a
        // sample every 50 us throughout.
        samples(&mut t, 0, 1000 * MS, 50 * US, true);
        samples(&mut t, 1000 * MS, 1030 * MS, 50 * US, false);
        samples(&mut t, 1030 * MS, 2000 * MS, 50 * US, true);
        // From the last progress at 999.95 ms to the first at 1030 ms.
        assert_eq!(t.longest_quiet(0, 2000 * MS), 30 * MS + 50 * US);
        assert_eq!(
            t.longest_quiet_at(0, 2000 * MS),
            (1000 * MS - 50 * US, 30 * MS + 50 * US)
        );
        assert_eq!(t.widest_interval(0, 2000 * MS), 50 * US);
        // Clipped by a window that ends inside the gap.
        assert_eq!(t.longest_quiet(500 * MS, 1010 * MS), 10 * MS + 50 * US);
    }

    #[test]
    fn a_stalled_sampler_shows_in_the_resolution_only_where_it_stalled() {
        let mut t = Timeline::default();
        samples(&mut t, 0, 100 * MS, 20 * US, true);
        // The sampler itself did not run for 3 ms.
        samples(&mut t, 103 * MS, 500 * MS, 20 * US, true);
        assert_eq!(t.widest_interval(0, 500 * MS), 3 * MS + 20 * US);
        // A window that starts later does not see it (runs are cut every
        // millisecond, so an edge is known to 1 ms).
        assert_eq!(t.widest_interval(110 * MS, 500 * MS), 20 * US);
        // Progress on both sides of the stall: the stall bounds the quiet time.
        assert_eq!(t.longest_quiet(0, 500 * MS), 3 * MS + 20 * US);
        // Known to be inside the run that began before it, to 1 ms.
        let (at, _) = t.longest_quiet_at(0, 500 * MS);
        assert!((99 * MS..100 * MS).contains(&at), "{at}");
    }

    #[test]
    fn no_progress_at_all_is_quiet_from_the_first_sample() {
        let mut t = Timeline::default();
        assert_eq!(t.longest_quiet(0, 10), 0);
        assert_eq!(t.span(), None);
        samples(&mut t, 5 * MS, 9 * MS, 100 * US, false);
        assert_eq!(t.longest_quiet(0, 100 * MS), 4 * MS - 100 * US);
        // Progress stops and never resumes within the window.
        let mut t = Timeline::default();
        samples(&mut t, 0, 10 * MS, 100 * US, true);
        samples(&mut t, 10 * MS, 50 * MS, 100 * US, false);
        assert_eq!(t.longest_quiet(0, 30 * MS), 20 * MS + 100 * US);
    }

    #[test]
    fn out_of_order_times_are_treated_as_simultaneous() {
        let mut t = Timeline::default();
        t.push(100, true);
        t.push(90, false);
        t.push(300, true);
        assert_eq!(t.longest_quiet(0, 1000), 200);
        assert_eq!(t.widest_interval(0, 1000), 200);
    }
}
