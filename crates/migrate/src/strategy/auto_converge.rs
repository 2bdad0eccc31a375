//! QEMU's auto-converge: the downtime rule, and vCPUs throttled more and
//! more while pre-copy cannot keep up with the guest.

use super::downtime::DowntimeParams;
use super::params::{ParamReader, Range, StrategyError};
use super::{Decision, RoundPlan, Strategy, StrategyContext, StrategyKind};
use crate::bitmap::PAGE_SIZE;
use crate::convergence::Limits;

/// Parameters of [`AutoConverge`], named and bounded as QEMU's migration
/// parameters (`cpu-throttle-initial`, `cpu-throttle-increment`,
/// `max-cpu-throttle`, `throttle-trigger-threshold`).
#[derive(Clone, Debug, PartialEq)]
pub struct AutoConvergeParams {
    /// First throttle, percent of vCPU time (`initial`).
    pub initial_pct: u32,
    /// Added at each later trigger, percent (`increment`).
    pub increment_pct: u32,
    /// Highest throttle, percent (`max`).
    pub max_pct: u32,
    /// A round is "high" when the guest dirtied more than this percentage
    /// of the bytes the round sent (`trigger-threshold`).
    pub trigger_threshold_pct: u32,
    /// High rounds that trigger a step (`trigger-rounds`; QEMU's
    /// `dirty_rate_high_cnt >= 2`).
    pub trigger_rounds: u32,
    /// When to switch over (the `downtime` strategy's rule).
    pub downtime: DowntimeParams,
}

impl Default for AutoConvergeParams {
    fn default() -> Self {
        AutoConvergeParams {
            initial_pct: 20,
            increment_pct: 10,
            max_pct: 99,
            trigger_threshold_pct: 50,
            trigger_rounds: 2,
            downtime: DowntimeParams::default(),
        }
    }
}

impl AutoConvergeParams {
    pub(super) fn read(r: &mut ParamReader<'_>) -> Result<Self, StrategyError> {
        let d = AutoConvergeParams::default();
        let p = AutoConvergeParams {
            initial_pct: r.percent("initial", d.initial_pct)?,
            increment_pct: r.percent("increment", d.increment_pct)?,
            max_pct: r.percent("max", d.max_pct)?,
            trigger_threshold_pct: r.count(
                "trigger-threshold",
                d.trigger_threshold_pct,
                Range::closed(1.0, 100.0),
            )?,
            trigger_rounds: r.count(
                "trigger-rounds",
                d.trigger_rounds,
                Range::closed(1.0, 100.0),
            )?,
            downtime: DowntimeParams::read(r)?,
        };
        if p.initial_pct > p.max_pct {
            return Err(r.bad(
                "initial",
                &p.initial_pct.to_string(),
                format_args!("is above max ({})", p.max_pct),
            ));
        }
        Ok(p)
    }
}

/// QEMU's auto-converge (`migration_trigger_throttle`, `mig_throttle_guest_down`):
/// after every round, the round is "high" if the guest dirtied more than
/// `trigger_threshold` % of the bytes it sent; every `trigger_rounds`-th
/// high round throttles the vCPUs to `initial` %, then `increment` % more,
/// up to `max` %. Rounds go at full (capped) speed and the switchover
/// follows the `downtime` rule; the engine releases the throttle when the
/// VM pauses for it, and on rollback.
#[derive(Clone, Debug, Default)]
pub struct AutoConverge {
    params: AutoConvergeParams,
    /// The throttle in force, percent (0 = none yet).
    pct: u32,
    /// High rounds since the last step.
    high: u32,
    /// Rounds taken into account.
    seen: usize,
}

impl AutoConverge {
    pub fn new(params: AutoConvergeParams) -> Self {
        AutoConverge {
            params,
            ..AutoConverge::default()
        }
    }

    /// The throttle in force, percent.
    pub fn throttle_pct(&self) -> u32 {
        self.pct
    }

    /// Takes the completed rounds not seen yet into account.
    fn observe(&mut self, ctx: &StrategyContext<'_>) {
        let p = &self.params;
        for r in ctx.rounds.iter().skip(self.seen) {
            let dirtied = (r.pages_dirtied * PAGE_SIZE) as u128;
            let threshold = u128::from(r.bytes) * u128::from(p.trigger_threshold_pct) / 100;
            if dirtied > threshold {
                self.high += 1;
                if self.high >= p.trigger_rounds {
                    self.high = 0;
                    self.pct = if self.pct == 0 {
                        p.initial_pct
                    } else {
                        (self.pct + p.increment_pct).min(p.max_pct)
                    };
                }
            }
        }
        self.seen = ctx.rounds.len();
    }
}

impl Strategy for AutoConverge {
    fn name(&self) -> &str {
        StrategyKind::AutoConverge.name()
    }

    fn decide(&mut self, ctx: &StrategyContext<'_>) -> Decision {
        self.observe(ctx);
        if self.params.downtime.switch_now(ctx) {
            return Decision::StopAndCopy;
        }
        Decision::Round(RoundPlan {
            throttle: (self.pct > 0).then(|| f64::from(self.pct) / 100.0),
            ..RoundPlan::default()
        })
    }

    fn limits(&self) -> Limits {
        self.params.downtime.limits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::tests::Fixture;

    fn throttle_of(d: &Decision) -> Option<f64> {
        match d {
            Decision::Round(p) => p.throttle,
            Decision::StopAndCopy | Decision::Postcopy => panic!("stopped"),
        }
    }

    #[test]
    fn qemu_schedule_20_then_plus_10_every_second_high_round_up_to_99() {
        let mut s = AutoConverge::default();
        // Downtime never fits: 200_000 pending pages at 100 Mbit/s.
        let mut f = Fixture::new(200_000);
        assert_eq!(throttle_of(&s.decide(&f.ctx(1, 0, None))), None);
        let mut seen = Vec::new();
        for round in 2..=24 {
            // 100 Mbit/s sent (12.5 MB) while 4000 pages (16 MB) were dirtied: high.
            f.dirty_round(&[(0, 4000)], 100e6);
            f.set_pending(0, 200_000);
            seen.push(throttle_of(&s.decide(&f.ctx(round, 0, None))));
        }
        let pct = |x: Option<f64>| x.map_or(0, |t| (t * 100.0).round() as u32);
        let got: Vec<u32> = seen.into_iter().map(pct).collect();
        assert_eq!(
            got,
            [
                0, 20, 20, 30, 30, 40, 40, 50, 50, 60, 60, 70, 70, 80, 80, 90, 90, 99, 99, 99, 99,
                99, 99
            ]
        );
    }

    #[test]
    fn a_round_that_keeps_up_does_not_count() {
        let mut s = AutoConverge::new(AutoConvergeParams {
            trigger_rounds: 1,
            ..AutoConvergeParams::default()
        });
        let mut f = Fixture::new(200_000);
        s.decide(&f.ctx(1, 0, None));
        // 1000 pages (4 MB) dirtied while 12.5 MB went out: 33 % < 50 %.
        f.dirty_round(&[(0, 1000)], 100e6);
        f.set_pending(0, 200_000);
        assert_eq!(throttle_of(&s.decide(&f.ctx(2, 0, None))), None);
        // trigger-rounds=1: every high round steps (+10 % per round).
        f.dirty_round(&[(0, 4000)], 100e6);
        f.set_pending(0, 200_000);
        assert_eq!(throttle_of(&s.decide(&f.ctx(3, 0, None))), Some(0.2));
        f.dirty_round(&[(0, 4000)], 100e6);
        f.set_pending(0, 200_000);
        assert_eq!(throttle_of(&s.decide(&f.ctx(4, 0, None))), Some(0.3));
        // When the rest fits in the downtime target: switch over.
        f.dirty_round(&[(0, 100)], 100e6);
        assert!(matches!(
            s.decide(&f.ctx(5, 0, None)),
            Decision::StopAndCopy
        ));
    }

    #[test]
    fn parameters_are_checked() {
        use crate::strategy::{StrategyKind, StrategyParams};
        let build = |kv: &[&str]| {
            StrategyKind::AutoConverge
                .build_with(&StrategyParams::parse(kv).unwrap())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(build(&["initial=50", "increment=5", "max=90%", "max-rounds=50"]).is_ok());
        assert_eq!(
            build(&["max=120"]).unwrap_err(),
            "strategy auto-converge: max=120: must be a whole percentage from 1 to 99"
        );
        assert!(build(&["initial=0"]).unwrap_err().contains("from 1 to 99"));
        assert!(
            build(&["increment=5.5"])
                .unwrap_err()
                .contains("whole percentage")
        );
        assert_eq!(
            build(&["initial=60", "max=50"]).unwrap_err(),
            "strategy auto-converge: initial=60: is above max (50)"
        );
        assert!(
            build(&["max-time=soon"])
                .unwrap_err()
                .contains("max-time=soon")
        );
    }
}
