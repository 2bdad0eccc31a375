//! QEMU's downtime-target rule, with a forced end.

use std::time::Duration;

use super::params::{ParamReader, Range, StrategyError};
use super::{Decision, RoundPlan, Strategy, StrategyContext, StrategyKind};
use crate::convergence::Limits;
use crate::source::MAX_ROUNDS;

/// Parameters of [`DowntimeTarget`] (and of the same rule in
/// [`AutoConverge`](super::AutoConverge)).
#[derive(Clone, Debug, PartialEq)]
pub struct DowntimeParams {
    /// Pre-copy rounds at most (`max-rounds`); the engine enforces it
    /// ([`Strategy::limits`]) unless the operator gives another.
    pub max_rounds: u32,
    /// Time since the migration started, at most (`max-time`); likewise.
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

    /// The round and time bounds, for [`Strategy::limits`].
    pub(super) fn limits(&self) -> Limits {
        Limits {
            max_rounds: Some(self.max_rounds),
            max_time: Some(self.max_time),
        }
    }

    /// Whether to switch over before this round: nothing pending, or the
    /// pending bytes fit in the downtime target at the measured bandwidth
    /// (never before round 2). The bounds are the engine's ([`Self::limits`]).
    pub(super) fn switch_now(&self, ctx: &StrategyContext<'_>) -> bool {
        if ctx.round <= 1 {
            return false;
        }
        if ctx.pending_pages == 0 {
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
/// that dirties faster than the link, pre-copy is bounded by `max_rounds`
/// rounds and `max_time` (the engine then acts as `--on-timeout` says).
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

    fn limits(&self) -> Limits {
        self.params.limits()
    }
}
