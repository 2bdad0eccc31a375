//! Seed 000 (docs/MIGRATION.md, "predictive"): Xen's pre-copy loop with
//! per-page dirty prediction and self-adaptive bandwidth.

use super::bandwidth::{AdaptiveRate, AdaptiveRateParams};
use super::hold::{self, Held};
use super::params::{ParamReader, Range, StrategyError};
use super::smoothing::{Smoother, SmoothingParams};
use super::xen::XenEnd;
use super::{Decision, MEASURED_MS, RoundPlan, Strategy, StrategyContext, StrategyKind};
use crate::convergence::Limits;
use units::Bandwidth;

/// Parameters of [`Predictive`].
#[derive(Clone, Debug, PartialEq)]
pub struct PredictiveParams {
    /// The per-page predictor.
    pub smoothing: SmoothingParams,
    /// A pending page whose forecast is above this is predicted hot (`threshold`).
    pub threshold: f64,
    /// Share of the downtime target held-back pages may take (`hold-budget`;
    /// `None` = `unlimited`).
    pub hold_budget: Option<f64>,
    /// The adaptive rate of rounds after the first.
    pub rate: AdaptiveRateParams,
    /// Xen's end rules, on the pages a round would send.
    pub end: XenEnd,
}

impl Default for PredictiveParams {
    fn default() -> Self {
        PredictiveParams {
            smoothing: SmoothingParams::default(),
            threshold: 0.5,
            hold_budget: Some(1.0),
            rate: AdaptiveRateParams::default(),
            end: XenEnd::default(),
        }
    }
}

impl PredictiveParams {
    pub(super) fn read(r: &mut ParamReader<'_>) -> Result<Self, StrategyError> {
        let d = PredictiveParams::default();
        Ok(PredictiveParams {
            smoothing: SmoothingParams::read(r)?,
            threshold: r.number("threshold", d.threshold, Range::open(0.0, 1.0))?,
            hold_budget: hold::read_budget(r)?,
            rate: AdaptiveRateParams::read(r)?,
            end: XenEnd::read(r)?,
        })
    }
}

/// Seed 000's pre-copy: every page's dirtying history is smoothed into a
/// forecast ([`smoothing`](super::smoothing)); pending pages forecast above
/// `threshold` are held back to the stop-and-copy (the likeliest first,
/// within `hold_budget`); the other pages are sent at an adaptive rate
/// ([`bandwidth`](super::bandwidth)); pages dirtied again mid-round are
/// skipped, and pre-copy ends by Xen's rules counted on the pages a round
/// would send, or when even the cap cannot keep up with the guest (judged
/// on a round of at least 50 ms: a shorter one measures too coarsely).
pub struct Predictive {
    params: PredictiveParams,
    smoother: Smoother,
    rate: AdaptiveRate,
    /// Rounds whose dirty set the smoother has taken.
    observed: usize,
}

impl Predictive {
    pub fn new(params: PredictiveParams) -> Self {
        Predictive {
            smoother: Smoother::new(params.smoothing.clone()),
            rate: AdaptiveRate::new(params.rate.clone()),
            observed: 0,
            params,
        }
    }

    /// The forecast of page `index`.
    pub fn forecast(&self, index: u64) -> f32 {
        self.smoother.forecast(index)
    }

    /// The pending pages to hold back.
    fn hold(&self, ctx: &StrategyContext<'_>) -> Held {
        let threshold = self.params.threshold as f32;
        let budget = hold::budget_pages(ctx, self.params.hold_budget);
        hold::select(ctx.pending, budget, |page| {
            let f = self.smoother.forecast(page);
            // Scores 0..=255 over (threshold, 1].
            (f > threshold).then(|| ((f - threshold) / (1.0 - threshold) * 255.0) as u8)
        })
    }
}

impl Strategy for Predictive {
    fn name(&self) -> &str {
        StrategyKind::Predictive.name()
    }

    fn decide(&mut self, ctx: &StrategyContext<'_>) -> Decision {
        if ctx.rounds.len() > self.observed {
            self.smoother.observe(ctx.history.last_dirtied());
            self.observed = ctx.rounds.len();
        }
        let held = self.hold(ctx);
        if self.params.end.done(ctx, ctx.pending_pages - held.held) {
            return Decision::StopAndCopy;
        }
        let rate = match (ctx.rounds.last(), ctx.dirty_rate_outside_bps(&held.pages)) {
            // Round 1 carries all memory and nothing is measured yet: the cap.
            (None, _) | (_, None) => ctx.max_bandwidth,
            (Some(last), Some(dirty)) => {
                let keeps_up = |c: Bandwidth| dirty <= c.bits_per_sec() as f64;
                if last.duration_ms >= MEASURED_MS && !ctx.max_bandwidth.is_none_or(keeps_up) {
                    // Even the whole cap cannot keep up with the guest.
                    return Decision::StopAndCopy;
                }
                let bps = self
                    .rate
                    .next(dirty, last.transfer_rate_bps, ctx.max_bandwidth);
                Bandwidth::from_bits_per_sec(bps)
            }
        };
        Decision::Round(RoundPlan {
            rate_limit: rate,
            skip_redirtied: true,
            predicted_hot: Some(held.predicted),
            hold_back: Some(held.pages),
            throttle: None,
        })
    }

    fn limits(&self) -> Limits {
        self.params.end.limits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::tests::Fixture;

    fn rate_of(d: &Decision) -> Option<u64> {
        match d {
            Decision::Round(p) => Some(p.rate_limit.map_or(0, |b| b.bits_per_sec())),
            Decision::StopAndCopy | Decision::Postcopy => None,
        }
    }

    #[test]
    fn pages_dirtied_round_after_round_are_held_back() {
        let mut s = Predictive::new(PredictiveParams {
            hold_budget: None,
            ..PredictiveParams::default()
        });
        let mut f = Fixture::new(1000);
        let cap = Some(1_000_000_000);
        // Round 1: nothing known, nothing held, the cap.
        let d = s.decide(&f.ctx(1, 0, cap));
        assert_eq!(rate_of(&d), Some(1_000_000_000));
        let Decision::Round(p) = d else { panic!() };
        assert_eq!(p.hold_back.as_ref().map(|h| h.count()), Some(0));
        // Pages 0..100 are dirtied in rounds 1 and 2, pages 100..200 once.
        f.dirty_round(&[(0, 200)], 1e9);
        f.set_pending(0, 200);
        let Decision::Round(p) = s.decide(&f.ctx(2, 1 << 20, cap)) else {
            panic!()
        };
        // A single write gives a forecast of 0.5 (alpha = 0.5): not above.
        assert_eq!(p.predicted_hot, Some(0));
        f.dirty_round(&[(0, 100)], 1e9);
        f.set_pending(0, 150);
        let Decision::Round(p) = s.decide(&f.ctx(3, 2 << 20, cap)) else {
            panic!()
        };
        let held = p.hold_back.unwrap();
        assert_eq!((p.predicted_hot, held.count()), (Some(100), 100));
        assert!(held.get(0) && held.get(99) && !held.get(100));
        assert!(s.forecast(0) > 0.9 && s.forecast(120) < 0.1);
    }

    #[test]
    fn the_hold_budget_follows_the_downtime_target() {
        let mut s = Predictive::new(PredictiveParams::default());
        let mut f = Fixture::new(10_000);
        s.decide(&f.ctx(1, 0, None));
        // 10_000 pages dirtied twice; at 100 Mbit/s measured, 300 ms hold
        // 3.75 MB = 915 pages.
        for r in 2..4 {
            f.dirty_round(&[(0, 10_000)], 100e6);
            let Decision::Round(p) = s.decide(&f.ctx(r, 1 << 20, None)) else {
                panic!()
            };
            if r == 3 {
                assert_eq!(p.predicted_hot, Some(10_000));
                assert_eq!(p.hold_back.unwrap().count(), 915);
            }
        }
    }

    #[test]
    fn the_rate_adapts_and_stops_when_the_cap_cannot_keep_up() {
        let mut s = Predictive::new(PredictiveParams::default());
        let mut f = Fixture::new(10_000);
        let cap = Some(1_000_000_000);
        s.decide(&f.ctx(1, 0, cap));
        // 2441 distinct pages in 1 s = 80 Mbit/s, sent at 400 Mbit/s: the
        // ratio 0.2 is below the target, the weight stays 2: 160 Mbit/s.
        f.dirty_round(&[(0, 2441)], 400e6);
        f.set_pending(0, 2441);
        let r = rate_of(&s.decide(&f.ctx(2, 1 << 20, cap))).unwrap();
        assert!((159_000_000..=161_000_000).contains(&r), "{r}");
        // The guest dirties faster than the cap: stop.
        f.dirty_round(&[(0, 40_000)], 400e6);
        f.set_pending(0, 10_000);
        assert!(matches!(
            s.decide(&f.ctx(3, 2 << 20, cap)),
            Decision::StopAndCopy
        ));
    }

    #[test]
    fn xen_end_rules_count_the_pages_a_round_would_send() {
        let mut s = Predictive::new(PredictiveParams {
            hold_budget: None,
            ..PredictiveParams::default()
        });
        let mut f = Fixture::new(1000);
        s.decide(&f.ctx(1, 0, None));
        for r in 2..4 {
            f.dirty_round(&[(0, 1000)], 1e9);
            f.set_pending(0, 1000);
            let d = s.decide(&f.ctx(r, 1 << 20, None));
            // Round 3: all 1000 pending pages are held, none would be sent.
            assert_eq!(matches!(d, Decision::StopAndCopy), r == 3);
        }
    }

    #[test]
    fn parameters_are_checked() {
        use crate::strategy::{StrategyKind, StrategyParams};
        let build = |kv: &[&str]| {
            StrategyKind::Predictive
                .build_with(&StrategyParams::parse(kv).unwrap())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(build(&["alpha=0.3", "threshold=0.6", "hold-budget=unlimited"]).is_ok());
        let e = build(&["alpha=1.5"]).unwrap_err();
        assert_eq!(e, "strategy predictive: alpha=1.5: must be in (0, 1)");
        let e = build(&["phi=0"]).unwrap_err();
        assert!(e.contains("(0, 1)"), "{e}");
        let e = build(&["alpha-min=0.9", "alpha-max=0.5"]).unwrap_err();
        assert!(e.contains("above alpha-max"), "{e}");
        let e = build(&["alpah=0.3"]).unwrap_err();
        assert!(
            e.starts_with("strategy predictive has no parameter 'alpah' (known: alpha,"),
            "{e}"
        );
        let e = build(&["min-rate=fast"]).unwrap_err();
        assert!(e.starts_with("strategy predictive: min-rate=fast: "), "{e}");
    }
}
