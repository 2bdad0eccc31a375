//! LR's prediction as a line in its look-ahead, for a host's window and
//! for a VM's, so that power-aware placement settles most LR verdicts from
//! a few numbers kept with each host instead of running the detector
//! (docs/MANAGER.md, "Placement").
//!
//! LR's fit is least squares on fixed positions, so its prediction is
//! linear in the window's values: a host's window with a VM added predicts
//! the host's line plus the VM's (scaled by its size over the host's
//! capacity), both taken at the same look-ahead. A verdict is given only
//! when the prediction is farther from the threshold than several times
//! the margin `Detector::quick_verdict` leaves for rounding, so it is
//! always the detector's own.

use crate::detect::{LR_WINDOW, lr_basis};

/// Far above rounding (the detector's own margin is a quarter of it).
const SURE_MARGIN: f64 = 4e-9;

/// A window's prediction at look-ahead `t` is `a + b * t`; the sum of its
/// terms' magnitudes is at most `abs_a + abs_b * t` (what its rounding
/// scales with).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LrLine {
    pub a: f64,
    pub b: f64,
    pub abs_a: f64,
    pub abs_b: f64,
}

impl LrLine {
    /// Unknown: no verdict is ever drawn from it (NaN compares false).
    pub const UNKNOWN: LrLine = LrLine {
        a: f64::NAN,
        b: f64::NAN,
        abs_a: f64::NAN,
        abs_b: f64::NAN,
    };

    /// The line of a window given newest first (its first `LR_WINDOW` values).
    pub fn of(newest_first: &[f64; LR_WINDOW]) -> LrLine {
        let (alpha, beta) = lr_basis();
        let mut l = LrLine {
            a: 0.0,
            b: 0.0,
            abs_a: 0.0,
            abs_b: 0.0,
        };
        for (j, y) in newest_first.iter().rev().enumerate() {
            l.a += y * alpha[j];
            l.b += y * beta[j];
            l.abs_a += y.abs() * alpha[j].abs();
            l.abs_b += y.abs() * beta[j].abs();
        }
        l
    }

    /// The line of the window multiplied by `w` (`w >= 0`).
    pub fn scaled(self, w: f64) -> LrLine {
        LrLine {
            a: self.a * w,
            b: self.b * w,
            abs_a: self.abs_a * w,
            abs_b: self.abs_b * w,
        }
    }

    /// The prediction at look-ahead `t`.
    pub fn at(&self, t: f64) -> f64 {
        self.a + self.b * t
    }

    /// The bound on the terms' magnitudes at look-ahead `t` (`t >= 0`).
    pub fn size_at(&self, t: f64) -> f64 {
        self.abs_a + self.abs_b * t
    }
}

/// LR's look-ahead for a longest migration of `max_t` seconds: the window
/// plus the intervals the migration spans (as the detector computes it).
pub(crate) fn look_ahead(max_t: f64, interval_s: f64) -> f64 {
    LR_WINDOW as f64 + (max_t / interval_s).ceil()
}

/// The LR verdict (overloaded or not) for a prediction `p` already
/// multiplied by the safety factor, whose terms' magnitudes (times the
/// factor) sum to at most `size`, when it is clear of the threshold.
pub(crate) fn sure(p: f64, size: f64) -> Option<bool> {
    let margin = SURE_MARGIN * (1.0 + size);
    if p >= 1.0 + margin {
        Some(true)
    } else if p < 1.0 - margin {
        Some(false)
    } else {
        None
    }
}

/// What the load buckets keep for LR with each host: its window's line
/// (`UNKNOWN` while its window is not full), its own look-ahead, and
/// whether its history is zero from the window's oldest on (then, with a
/// VM whose history is too, LR falls back to its threshold on the load).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LrHost {
    pub line: LrLine,
    pub at: f64,
    pub zero_tail: bool,
}

impl LrHost {
    /// The host's LR verdict with a VM of line `vm` (already scaled to the
    /// host's capacity) and look-ahead `vm_at` added, when it is sure.
    pub fn verdict(&self, vm: &LrLine, vm_at: f64, safety: f64) -> Option<bool> {
        let t = self.at.max(vm_at);
        let p = (self.line.at(t) + vm.at(t)) * safety;
        let size = (self.line.size_at(t) + vm.size_at(t)) * safety;
        sure(p, size)
    }
}

/// A bucket's hosts at once: the least of their own predictions, the
/// largest of their sizes, and the range of their look-aheads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LrSummary {
    least: f64,
    size: f64,
    at_lo: f64,
    at_hi: f64,
}

impl Default for LrSummary {
    fn default() -> Self {
        LrSummary {
            least: f64::INFINITY,
            size: 0.0,
            at_lo: f64::INFINITY,
            at_hi: f64::NEG_INFINITY,
        }
    }
}

impl LrSummary {
    /// Takes in one more host.
    pub fn add(&mut self, h: &LrHost) {
        let own = h.line.at(h.at);
        let size = h.line.size_at(h.at);
        // An unknown line (NaN) makes the whole bucket unknown.
        self.least = if own.is_nan() {
            f64::NEG_INFINITY
        } else {
            self.least.min(own)
        };
        self.size = if size.is_nan() {
            f64::INFINITY
        } else {
            self.size.max(size)
        };
        self.at_lo = self.at_lo.min(h.at);
        self.at_hi = self.at_hi.max(h.at);
    }

    /// Takes in another summary's hosts.
    pub fn merge(&mut self, o: &LrSummary) {
        self.least = self.least.min(o.least);
        self.size = self.size.max(o.size);
        self.at_lo = self.at_lo.min(o.at_lo);
        self.at_hi = self.at_hi.max(o.at_hi);
    }

    /// Whether LR refuses every host of the bucket a VM of line `vm` and
    /// look-ahead `vm_at` would be added to. Each host's prediction is at
    /// least the least of the hosts' own plus the VM's least over the
    /// bucket's look-aheads (a line: its least is at an end), when the VM's
    /// look-ahead changes none of theirs.
    pub fn all_refuse(&self, vm: &LrLine, vm_at: f64, safety: f64) -> bool {
        if !(vm_at <= self.at_lo) {
            return false;
        }
        let p = (self.least + vm.at(self.at_lo).min(vm.at(self.at_hi))) * safety;
        let size = (self.size + vm.size_at(self.at_hi)) * safety;
        sure(p, size) == Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{Detector, HostLoad};

    const INTERVAL_S: f64 = 300.0;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A host window (newest first), its longest migration, a VM window,
    /// its weight and migration time; some hosts flat at the load whose
    /// prediction with the VM is exactly the threshold, or a rounding step
    /// off it.
    struct Case {
        host: [f64; LR_WINDOW],
        host_t: f64,
        vm: [f64; LR_WINDOW],
        w: f64,
        vm_t: f64,
    }

    fn case(r: &mut Rng, i: usize, safety: f64) -> Case {
        let mut c = Case {
            host: [0.0; LR_WINDOW],
            host_t: 600.0 * r.next(),
            vm: [0.0; LR_WINDOW],
            w: 0.1 + r.next(),
            vm_t: 600.0 * r.next(),
        };
        c.host.iter_mut().for_each(|x| *x = 1e-3 + r.next());
        c.vm.iter_mut().for_each(|x| *x = r.next() * 0.3);
        match i % 4 {
            1 => {
                // Flat VM and host: the prediction is their sum.
                let v = r.next() * 0.2;
                c.vm = [v; LR_WINDOW];
                let h = 1.0 / safety - v * c.w;
                let nudge = [0.0, 1e-16, -1e-16, 1e-12, -1e-12][i / 4 % 5];
                c.host = [h + nudge; LR_WINDOW];
            }
            2 => c.vm = [0.0; LR_WINDOW],
            _ => {}
        }
        c
    }

    /// What the detector says with the VM added, as the allocation runs it.
    fn detector_says(c: &Case, d: &Detector) -> bool {
        let mut window = c.host;
        for (x, v) in window.iter_mut().zip(&c.vm) {
            *x += v * c.w;
        }
        let load = HostLoad {
            utilization: window[0],
            history_newest_first: &window,
            max_migration_time_s: c.host_t.max(c.vm_t),
            interval_s: INTERVAL_S,
        };
        d.is_overloaded(&load)
    }

    fn host(c: &Case) -> LrHost {
        LrHost {
            line: LrLine::of(&c.host),
            at: look_ahead(c.host_t, INTERVAL_S),
            zero_tail: false,
        }
    }

    #[test]
    fn sure_verdicts_are_the_detectors() {
        let safety = 1.2;
        let d = Detector::Lr {
            safety,
            fallback: 0.7,
        };
        let mut r = Rng(99);
        let (mut sure, mut total) = (0, 0);
        for i in 0..40_000 {
            let c = case(&mut r, i, safety);
            let vm = LrLine::of(&c.vm).scaled(c.w);
            total += 1;
            if let Some(v) = host(&c).verdict(&vm, look_ahead(c.vm_t, INTERVAL_S), safety) {
                sure += 1;
                assert_eq!(v, detector_says(&c, &d), "case {i}");
            }
        }
        // Most are settled; those at the threshold are not.
        assert!(sure > total * 7 / 10, "{sure} of {total}");
        assert!(sure < total, "{sure} of {total}");
    }

    /// A bucket refused whole holds only hosts the detector refuses, on
    /// random buckets of random and flat windows.
    #[test]
    fn a_bucket_refused_whole_holds_only_refused_hosts() {
        let safety = 1.2;
        let d = Detector::Lr {
            safety,
            fallback: 0.7,
        };
        let mut r = Rng(7);
        let mut refused = 0;
        for b in 0..20_000 {
            let n = 1 + b % 7;
            let mut cases: Vec<Case> = (0..n).map(|i| case(&mut r, b + i, safety)).collect();
            // The VM of the first case goes to every host of the bucket.
            let (vm, w, vm_t) = (cases[0].vm, cases[0].w, cases[0].vm_t);
            let lift = 0.5 * r.next();
            for c in cases.iter_mut() {
                (c.vm, c.w, c.vm_t) = (vm, w, vm_t);
                c.host.iter_mut().for_each(|x| *x += lift);
            }
            let mut sum = LrSummary::default();
            cases.iter().for_each(|c| sum.add(&host(c)));
            let line = LrLine::of(&vm).scaled(w);
            if sum.all_refuse(&line, look_ahead(vm_t, INTERVAL_S), safety) {
                refused += 1;
                for c in &cases {
                    assert!(detector_says(c, &d), "bucket {b}");
                }
            }
        }
        assert!(refused > 1000, "{refused}");
    }

    #[test]
    fn an_unknown_line_settles_nothing() {
        let h = LrHost {
            line: LrLine::UNKNOWN,
            at: 11.0,
            zero_tail: true,
        };
        let vm = LrLine::of(&[0.5; LR_WINDOW]);
        assert_eq!(h.verdict(&vm, 11.0, 1.2), None);
        let mut sum = LrSummary::default();
        sum.add(&h);
        sum.add(&LrHost {
            line: LrLine::of(&[2.0; LR_WINDOW]),
            at: 11.0,
            zero_tail: false,
        });
        assert!(!sum.all_refuse(&vm, 11.0, 1.2));
    }
}
