//! QEMU's downtime-target rule, with a forced end.

use std::time::Duration;

use super::{Decision, RoundPlan, Strategy, StrategyContext, StrategyKind};
use crate::convergence::Limits;

/// Parameters of [`DowntimeTarget`]: its own limits, which the engine
/// enforces ([`Strategy::limits`]) unless the operator gives others.
#[derive(Clone, Debug, PartialEq)]
pub struct DowntimeParams {
    /// Pre-copy rounds at most.
    pub max_rounds: u32,
    /// Time since the migration started, at most.
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
        if ctx.round > 1 {
            if ctx.pending_pages == 0 {
                return Decision::StopAndCopy;
            }
            if let Some(bw) = ctx.measured_bandwidth_bps() {
                let budget = bw / 8.0 * ctx.max_downtime.as_secs_f64();
                if (ctx.pending_bytes() as f64) <= budget {
                    return Decision::StopAndCopy;
                }
            }
        }
        Decision::Round(RoundPlan::default())
    }

    fn limits(&self) -> Limits {
        Limits {
            max_rounds: Some(self.params.max_rounds),
            max_time: Some(self.params.max_time),
        }
    }
}
