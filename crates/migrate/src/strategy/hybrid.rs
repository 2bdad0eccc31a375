//! Post-copy, alone (`postcopy`) or after pre-copy rounds (`hybrid`).

use super::params::{ParamReader, Range, StrategyError};
use super::{Decision, RoundPlan, Strategy, StrategyContext, StrategyKind};
use crate::convergence::Limits;
use std::time::Duration;

/// Switches to post-copy at once: only the vCPU and device state (and the
/// set of pages to fetch) travel while the VM is paused; every page follows
/// after the VM runs on the destination.
#[derive(Clone, Debug, Default)]
pub struct Postcopy;

impl Strategy for Postcopy {
    fn name(&self) -> &str {
        StrategyKind::Postcopy.name()
    }
    fn decide(&mut self, _ctx: &StrategyContext<'_>) -> Decision {
        Decision::Postcopy
    }
    fn switchover(&self) -> Decision {
        Decision::Postcopy
    }
    fn precopy_rounds(&self) -> bool {
        false
    }
}

/// Parameters of [`Hybrid`].
#[derive(Clone, Debug, PartialEq)]
pub struct HybridParams {
    /// The pre-copy strategy whose rules run the rounds (`predictive` by
    /// default): its stop decision becomes the switch to post-copy.
    pub precopy: StrategyKind,
    /// Switch when the pending set shrank by less than this fraction over
    /// the last round: more rounds would mostly resend. Off (0) by
    /// default: `predictive` plateaus on purpose while it holds hot pages
    /// back, and ends its rounds by its own rules.
    pub min_shrink: f64,
    /// Where the wrapped rules stop with a set that copies in at most this
    /// long over the link, copy it in the pause instead of switching:
    /// post-copy's switch (the destination dropping its stale copies, the
    /// guest's first faults) has a cost of its own, and a set the rules
    /// judged small enough to stop on is one a pre-copy end handles well.
    /// `None` (the default): [`DEFAULT_COPY_UNDER`], or the downtime target
    /// if lower. Zero: always switch.
    pub copy_under: Option<Duration>,
}

/// About what a switch to post-copy costs the guest: its engine downtime
/// was 6-13 ms on the project machine (docs/BENCHMARKS.md). A rest that
/// copies faster is copied in the pause; a longer one would pause the
/// guest longer than switching does (up to the downtime target, 300 ms by
/// default, which `copy-under` followed before).
pub const DEFAULT_COPY_UNDER: Duration = Duration::from_millis(10);

impl Default for HybridParams {
    fn default() -> Self {
        HybridParams {
            precopy: StrategyKind::Predictive,
            min_shrink: 0.0,
            copy_under: None,
        }
    }
}

impl HybridParams {
    /// `precopy` (a pre-copy strategy's name), `min-shrink` and
    /// `copy-under`; the other keys are the pre-copy strategy's own.
    pub(super) fn read(r: &mut ParamReader<'_>) -> Result<Self, StrategyError> {
        let d = HybridParams::default();
        Ok(HybridParams {
            precopy: r.precopy_strategy("precopy", d.precopy)?,
            min_shrink: r.number("min-shrink", d.min_shrink, Range::closed(0.0, 1.0))?,
            copy_under: r
                .given("copy-under", units::parse_duration_or_zero)?
                .or(d.copy_under),
        })
    }
}

/// Pre-copy rounds under another strategy's rules, then post-copy instead
/// of stop-and-copy: the switch happens when those rules would stop, when
/// the pending set no longer shrinks, or when the guest dirties memory
/// faster than the link sends it (the pages the rules hold back for the
/// pause not counted). The rounds make post-copy's set (and so
/// its page faults) small; the switch keeps the pause to the state transfer.
/// Where the rules stop with a set that copies faster than a switch costs
/// (`copy_under`), the pause copies it: a workload that converges ends as
/// pre-copy does, one that cannot ends in post-copy.
pub struct Hybrid {
    params: HybridParams,
    precopy: Box<dyn Strategy>,
}

impl Hybrid {
    pub fn new(params: HybridParams) -> Self {
        let precopy = params.precopy.build();
        Hybrid::with_precopy(params, precopy)
    }

    /// Hybrid over `precopy`, built with its own parameters.
    pub fn with_precopy(params: HybridParams, precopy: Box<dyn Strategy>) -> Self {
        Hybrid { params, precopy }
    }

    /// Hybrid over `precopy`'s rules, other parameters by default.
    pub fn wrapping(precopy: StrategyKind) -> Self {
        Hybrid::new(HybridParams {
            precopy,
            ..HybridParams::default()
        })
    }

    /// The pending set copies within `copy_under` over the link (never,
    /// with a zero budget).
    fn copies_quickly(&self, ctx: &StrategyContext<'_>) -> bool {
        let budget = self
            .params
            .copy_under
            .unwrap_or(DEFAULT_COPY_UNDER.min(ctx.max_downtime));
        let Some(bps) = link_bps(ctx).filter(|_| !budget.is_zero()) else {
            return false;
        };
        ctx.pending_bytes() as f64 * 8.0 / bps <= budget.as_secs_f64()
    }

    /// Why the rounds should end now, if they should, before the round
    /// `plan` of the wrapped rules.
    fn stalled(&self, ctx: &StrategyContext<'_>, plan: &RoundPlan) -> bool {
        let Some(last) = ctx.rounds.last() else {
            return false;
        };
        let shrunk = 1.0 - ctx.pending_pages as f64 / last.pages_pending.max(1) as f64;
        if self.params.min_shrink > 0.0 && shrunk < self.params.min_shrink {
            return true;
        }
        // The dirty rate of the pages the rounds would resend: those the
        // plan holds back for the pause (predictive's hot pages) count
        // against the pause, not the link. A short round measures it too
        // coarsely to act on.
        let dirty = match &plan.hold_back {
            Some(held) => ctx.dirty_rate_outside_bps(held),
            None => ctx.last_dirty_rate_bps(),
        };
        last.duration_ms >= super::MEASURED_MS
            && link_bps(ctx)
                .zip(dirty)
                .is_some_and(|(link, dirty)| dirty >= link)
    }
}

impl Default for Hybrid {
    fn default() -> Self {
        Hybrid::new(HybridParams::default())
    }
}

impl Strategy for Hybrid {
    fn name(&self) -> &str {
        StrategyKind::Hybrid.name()
    }

    fn decide(&mut self, ctx: &StrategyContext<'_>) -> Decision {
        match self.precopy.decide(ctx) {
            Decision::StopAndCopy if self.copies_quickly(ctx) => Decision::StopAndCopy,
            Decision::StopAndCopy | Decision::Postcopy => Decision::Postcopy,
            Decision::Round(plan) if ctx.round > 1 && self.stalled(ctx, &plan) => {
                Decision::Postcopy
            }
            round => round,
        }
    }

    fn limits(&self) -> Limits {
        self.precopy.limits()
    }

    fn switchover(&self) -> Decision {
        Decision::Postcopy
    }
}

/// What the link carries, bits/s: the rounds' measured rate, or the cap
/// if higher (a strategy that paces its rounds below the cap, as
/// `predictive` does, measures its own pace, not the link's).
fn link_bps(ctx: &StrategyContext<'_>) -> Option<f64> {
    let cap = ctx.max_bandwidth.map(|b| b.bits_per_sec() as f64);
    match (ctx.measured_bandwidth_bps(), cap) {
        (Some(m), Some(c)) => Some(m.max(c)),
        (m, c) => m.or(c),
    }
    .filter(|&b| b > 0.0)
}
