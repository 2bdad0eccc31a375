//! Xen's classic pre-copy schedule.

use super::{Decision, RoundPlan, Strategy, StrategyContext, StrategyKind};
use crate::convergence::Limits;
use units::Bandwidth;

/// Parameters of [`Xen`] (defaults from Clark et al. 2005 and libxc).
#[derive(Clone, Debug, PartialEq)]
pub struct XenParams {
    /// Rate of the first round, and the floor of later rounds.
    pub start_rate: Bandwidth,
    /// Added to the measured dirty rate for the next round.
    pub increment: Bandwidth,
    /// Pre-copy rounds at most: Xen's own limit, which the engine enforces
    /// ([`Strategy::limits`]) unless the operator gives another.
    pub max_rounds: u32,
    /// Stop when fewer pages than this are pending.
    pub min_pending_pages: u64,
    /// Stop once this many times the memory size has been sent.
    pub max_factor: f64,
}

impl Default for XenParams {
    fn default() -> Self {
        XenParams {
            start_rate: Bandwidth::from_bits_per_sec(100_000_000).expect("non-zero"),
            increment: Bandwidth::from_bits_per_sec(50_000_000).expect("non-zero"),
            max_rounds: 30,
            min_pending_pages: 50,
            max_factor: 3.0,
        }
    }
}

/// Xen's classic pre-copy (Clark et al., NSDI 2005, §5.1; libxc): rounds
/// rate-limited from 100 Mbit/s, each next round at the last round's dirty
/// rate + 50 Mbit/s up to the cap; pages dirtied again during a round are
/// skipped to the next; stop-and-copy after 30 rounds, under 50 pending
/// pages, after 3x memory sent, or when the rate the next round would need
/// exceeds the cap (pre-copy can no longer keep up with the guest).
#[derive(Clone, Debug, Default)]
pub struct Xen {
    pub params: XenParams,
}

impl Strategy for Xen {
    fn name(&self) -> &str {
        StrategyKind::Xen.name()
    }

    fn decide(&mut self, ctx: &StrategyContext<'_>) -> Decision {
        let p = &self.params;
        if ctx.round > 1 {
            let done = ctx.pending_pages < p.min_pending_pages
                || ctx.bytes_sent as f64 >= p.max_factor * ctx.memory_bytes as f64;
            if done {
                return Decision::StopAndCopy;
            }
        }
        let rate = match ctx.last_dirty_rate_bps() {
            None => p.start_rate.bits_per_sec(),
            Some(dirty) => {
                let want = dirty as u64 + p.increment.bits_per_sec();
                if let Some(cap) = ctx.max_bandwidth
                    && want > cap.bits_per_sec()
                {
                    // The guest dirties faster than the link can follow.
                    return Decision::StopAndCopy;
                }
                want.max(p.start_rate.bits_per_sec())
            }
        };
        let rate = match ctx.max_bandwidth {
            Some(cap) => rate.min(cap.bits_per_sec()),
            None => rate,
        };
        Decision::Round(RoundPlan {
            rate_limit: Bandwidth::from_bits_per_sec(rate),
            skip_redirtied: true,
            ..RoundPlan::default()
        })
    }

    fn limits(&self) -> Limits {
        Limits {
            max_rounds: Some(self.params.max_rounds),
            max_time: None,
        }
    }
}
