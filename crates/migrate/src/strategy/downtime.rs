//! QEMU's downtime-target rule, with a forced end.

use std::time::Duration;

use super::params::{ParamReader, Range, StrategyError};
use super::{Decision, RoundPlan, Strategy, StrategyContext, StrategyKind};
use crate::source::MAX_ROUNDS;

/// Parameters of [`DowntimeTarget`] (and of the same rule in
/// [`AutoConverge`](super::AutoConverge)).
#[derive(Clone, Debug, PartialEq)]
pub struct DowntimeParams {
    /// Force the switchover after this many pre-copy rounds (`max-rounds`).
    pub max_rounds: u32,
    /// Force the switchover once the migration has run this long (`max-time`).
    pub max_time: Duration,
}

impl Default for DowntimeParams {
    fn default() -> Self {
        DowntimeParams {
            max_rounds: 30,
            max_time: Duration::from_secs(60),
        }
    }
}

impl DowntimeParams {
    pub(super) fn read(r: &mut ParamReader<'_>) -> Result<Self, StrategyError> {
        let d = DowntimeParams::default();
        Ok(DowntimeParams {
            max_rounds: r.count(
                "max-rounds",
                d.max_rounds,
                Range::closed(1.0, f64::from(MAX_ROUNDS)),
            )?,
            max_time: r.duration("max-time", d.max_time)?,
        })
    }

    /// Whether to switch over before this round: nothing pending, the
    /// pending bytes fit in the downtime target at the measured bandwidth,
    /// or the forced end (never before round 2).
    pub(super) fn switch_now(&self, ctx: &StrategyContext<'_>) -> bool {
        if ctx.round <= 1 {
            return false;
        }
        if ctx.pending_pages == 0 || ctx.round > self.max_rounds || ctx.elapsed >= self.max_time {
            return true;
        }
        ctx.measured_bandwidth_bps().is_some_and(|bw| {
            let budget = bw / 8.0 * ctx.max_downtime.as_secs_f64();
            ctx.pending_bytes() as f64 <= budget
        })
    }
}

/// QEMU's rule: keep copying at full (capped) speed, and switch over as soon
/// as the pending dirty bytes can be sent within the downtime target at the
/// measured bandwidth. Unlike QEMU, which would iterate forever on a guest
/// that dirties faster than the link, the switchover is forced after
/// `max_rounds` rounds or `max_time`.
#[derive(Clone, Debug, Default)]
pub struct DowntimeTarget {
    pub params: DowntimeParams,
}

impl Strategy for DowntimeTarget {
    fn name(&self) -> &str {
        StrategyKind::Downtime.name()
    }

    fn decide(&mut self, ctx: &StrategyContext<'_>) -> Decision {
        if self.params.switch_now(ctx) {
            Decision::StopAndCopy
        } else {
            Decision::Round(RoundPlan::default())
        }
    }
}
