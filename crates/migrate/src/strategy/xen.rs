//! Xen's classic pre-copy schedule.

use super::params::{ParamReader, Range, StrategyError};
use super::{Decision, RoundPlan, Strategy, StrategyContext, StrategyKind};
use crate::convergence::Limits;
use crate::source::MAX_ROUNDS;
use units::Bandwidth;

/// Parameters of [`Xen`] (defaults from Clark et al. 2005 and libxc).
#[derive(Clone, Debug, PartialEq)]
pub struct XenParams {
    /// Rate of the first round, and the floor of later rounds (`start-rate`).
    pub start_rate: Bandwidth,
    /// Added to the measured dirty rate for the next round (`increment`).
    pub increment: Bandwidth,
    /// The pre-copy rounds' end rules (`max-rounds`, `min-pending`, `max-factor`).
    pub end: XenEnd,
}

/// Xen's rules for ending pre-copy, shared by the strategies built on its loop.
#[derive(Clone, Debug, PartialEq)]
pub struct XenEnd {
    /// Pre-copy rounds at most: Xen's own limit, which the engine enforces
    /// ([`Strategy::limits`]) unless the operator gives another.
    pub max_rounds: u32,
    /// Stop when fewer pages than this would be sent in the next round.
    pub min_pending_pages: u64,
    /// Stop once this many times the memory size has been sent.
    pub max_factor: f64,
}

impl Default for XenEnd {
    fn default() -> Self {
        XenEnd {
            max_rounds: 30,
            min_pending_pages: 50,
            max_factor: 3.0,
        }
    }
}

impl XenEnd {
    pub(super) fn read(r: &mut ParamReader<'_>) -> Result<Self, StrategyError> {
        let d = XenEnd::default();
        Ok(XenEnd {
            max_rounds: r.count(
                "max-rounds",
                d.max_rounds,
                Range::closed(1.0, f64::from(MAX_ROUNDS)),
            )?,
            min_pending_pages: u64::from(r.count(
                "min-pending",
                d.min_pending_pages as u32,
                Range::closed(0.0, f64::from(u32::MAX)),
            )?),
            max_factor: r.number("max-factor", d.max_factor, Range::above(0.0, true))?,
        })
    }

    /// Whether pre-copy should end before this round, `sendable` being the
    /// pages it would send (never before round 2). The round limit is the
    /// engine's to enforce ([`XenEnd::limits`]).
    pub(super) fn done(&self, ctx: &StrategyContext<'_>, sendable: u64) -> bool {
        ctx.round > 1
            && (sendable < self.min_pending_pages
                || ctx.bytes_sent as f64 >= self.max_factor * ctx.memory_bytes as f64)
    }

    /// The round limit, for [`Strategy::limits`].
    pub(super) fn limits(&self) -> Limits {
        Limits {
            max_rounds: Some(self.max_rounds),
            max_time: None,
        }
    }
}

impl Default for XenParams {
    fn default() -> Self {
        XenParams {
            start_rate: Bandwidth::from_bits_per_sec(100_000_000).expect("non-zero"),
            increment: Bandwidth::from_bits_per_sec(50_000_000).expect("non-zero"),
            end: XenEnd::default(),
        }
    }
}

impl XenParams {
    pub(super) fn read(r: &mut ParamReader<'_>) -> Result<Self, StrategyError> {
        let d = XenParams::default();
        Ok(XenParams {
            start_rate: r.bandwidth("start-rate", d.start_rate)?,
            increment: r.bandwidth("increment", d.increment)?,
            end: XenEnd::read(r)?,
        })
    }

    /// Xen's decision for a round that would send `sendable` pages while
    /// the guest dirties the pages that matter at `dirty_bps`.
    pub(super) fn schedule(
        &self,
        ctx: &StrategyContext<'_>,
        sendable: u64,
        dirty_bps: Option<f64>,
    ) -> Decision {
        if self.end.done(ctx, sendable) {
            return Decision::StopAndCopy;
        }
        let rate = match dirty_bps {
            None => self.start_rate.bits_per_sec(),
            Some(dirty) => {
                let want = dirty as u64 + self.increment.bits_per_sec();
                if let Some(cap) = ctx.max_bandwidth
                    && want > cap.bits_per_sec()
                {
                    // The guest dirties faster than the link can follow.
                    return Decision::StopAndCopy;
                }
                want.max(self.start_rate.bits_per_sec())
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
        self.params
            .schedule(ctx, ctx.pending_pages, ctx.last_dirty_rate_bps())
    }

    fn limits(&self) -> Limits {
        self.params.end.limits()
    }
}
