//! Strategies: before every round the engine asks the strategy whether to
//! run another pre-copy round (and how: rate, which pages to hold back,
//! whether to skip pages dirtied again mid-round, vCPU throttling) or to stop
//! the VM and copy the rest.
//!
//! Each strategy has a name ([`StrategyKind`], parsed in one place), its
//! parameters by name ([`StrategyParams`], checked by the strategy) and its
//! own file; `smoothing`, `bandwidth` and `hold` are the predictor, the
//! adaptive rate and the budgeted hold-back set they share.

mod auto_converge;
mod bandwidth;
mod delayed;
mod downtime;
mod hold;
mod hybrid;
mod kind;
mod params;
mod predictive;
mod smoothing;
#[cfg(test)]
mod tests;
mod xen;

use std::time::Duration;

use crate::bitmap::{DirtyBitmap, PAGE_SIZE};
use crate::convergence::Limits;
use crate::history::PageHistory;
use crate::report::RoundReport;
use units::Bandwidth;

pub use auto_converge::{AutoConverge, AutoConvergeParams};
pub use bandwidth::AdaptiveRateParams;
pub use delayed::{Delayed, DelayedParams};
pub use downtime::{DowntimeParams, DowntimeTarget};
pub use hybrid::{Hybrid, HybridParams, Postcopy};
pub use kind::{DEFAULT_STRATEGY, STRATEGIES, StrategyKind, UnknownStrategy};
pub use params::{Known, StrategyError, StrategyParams};
pub use predictive::{Predictive, PredictiveParams};
pub use smoothing::SmoothingParams;
pub use xen::{Xen, XenEnd, XenParams};

/// A round shorter than this (ms) measures rates too coarsely to act on.
pub(crate) const MEASURED_MS: f64 = 50.0;

/// What a strategy sees before each round.
pub struct StrategyContext<'a> {
    /// Number of the round about to be planned (1-based).
    pub round: u32,
    /// Pages that would be sent in it.
    pub pending: &'a DirtyBitmap,
    pub pending_pages: u64,
    /// Per-page dirty and send history.
    pub history: &'a PageHistory,
    /// Completed rounds.
    pub rounds: &'a [RoundReport],
    pub memory_bytes: u64,
    /// Bytes written to the connection so far (handshake included).
    pub bytes_sent: u64,
    /// Time since the migration started.
    pub elapsed: Duration,
    /// The user's bandwidth cap (`None` = unlimited).
    pub max_bandwidth: Option<Bandwidth>,
    /// The user's downtime target.
    pub max_downtime: Duration,
}

impl StrategyContext<'_> {
    /// Bandwidth the connection achieved, bits/s: the last round's if it
    /// lasted long enough to be meaningful, else the average over all rounds.
    pub fn measured_bandwidth_bps(&self) -> Option<f64> {
        let last = self.rounds.last()?;
        if last.duration_ms >= MEASURED_MS && last.bytes > 0 {
            return Some(last.transfer_rate_bps);
        }
        let bytes: u64 = self.rounds.iter().map(|r| r.bytes).sum();
        let ms: f64 = self.rounds.iter().map(|r| r.duration_ms).sum();
        (ms > 0.0 && bytes > 0).then(|| bytes as f64 * 8.0 / (ms / 1000.0))
    }

    /// The guest's dirty rate in the last round, bits/s.
    pub fn last_dirty_rate_bps(&self) -> Option<f64> {
        self.rounds.last().map(|r| r.dirty_rate_bps)
    }

    /// Bytes still to send if the VM stopped now (an upper bound: zero pages cost less).
    pub fn pending_bytes(&self) -> u64 {
        self.pending_pages * PAGE_SIZE
    }

    /// The guest's dirty rate in the last round counting only pages outside
    /// `held` (those a strategy holds back need no bandwidth now), bits/s.
    pub fn dirty_rate_outside_bps(&self, held: &DirtyBitmap) -> Option<f64> {
        let last = self.rounds.last()?;
        let inside = self.history.last_dirtied().count_and(held);
        let pages = last.pages_dirtied.saturating_sub(inside);
        let secs = (last.duration_ms / 1000.0).max(1e-9);
        Some((pages * PAGE_SIZE) as f64 * 8.0 / secs)
    }
}

/// How to run one pre-copy round.
#[derive(Clone, Debug, Default)]
pub struct RoundPlan {
    /// Rate limit for this round; the engine also applies the user's cap.
    pub rate_limit: Option<Bandwidth>,
    /// Skip a pending page if the guest dirtied it again since the round
    /// began (it will be sent in a later round anyway).
    pub skip_redirtied: bool,
    /// Pages to hold back this round (they stay pending, and the
    /// stop-and-copy sends whatever is still held). A plan that sets it is
    /// a prediction: the round's report gives its precision and recall.
    pub hold_back: Option<DirtyBitmap>,
    /// Pending pages the strategy predicts will be written again before the
    /// end (its hold-back candidates before any budget), for the report.
    pub predicted_hot: Option<u64>,
    /// Keep the vCPUs out of the guest for this fraction of the time, from
    /// this round on (if the VM supports it); `None` leaves it as it is.
    /// The engine releases it at the switchover and on rollback.
    pub throttle: Option<f64>,
}

/// A strategy's answer before each round.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Run another pre-copy round with the VM running.
    Round(RoundPlan),
    /// Pause the VM and send everything pending.
    StopAndCopy,
    /// Pause the VM, send its state and the set of pages still to send,
    /// run it on the destination, and send those pages after: requested
    /// ones first, the rest in the background (needs a destination that
    /// can, `Capabilities::POSTCOPY`).
    Postcopy,
}

/// Decides, round by round, how pre-copy proceeds and when it ends.
pub trait Strategy: Send {
    fn name(&self) -> &str;
    /// Another round, or the switchover: the strategy's own criterion.
    /// The engine enforces the round and time bounds ([`Strategy::limits`]).
    fn decide(&mut self, ctx: &StrategyContext<'_>) -> Decision;
    /// The strategy's own bounds on pre-copy, which an operator's
    /// [`Limits`] replace (`SourceOptions::limits`). None by default.
    fn limits(&self) -> Limits {
        Limits::default()
    }
    /// How this strategy switches over when pre-copy is ended for it (a
    /// limit reached with `--on-timeout force`, the round guard):
    /// [`Decision::StopAndCopy`] by default, [`Decision::Postcopy`] for
    /// strategies that end in post-copy (the engine then checks at Setup
    /// that the destination can).
    fn switchover(&self) -> Decision {
        Decision::StopAndCopy
    }
    /// Whether this strategy runs pre-copy rounds at all. One that never
    /// does (post-copy at once) lets the engine skip dirty logging, whose
    /// write protection would only slow the guest down before the switch.
    fn precopy_rounds(&self) -> bool {
        true
    }
}

/// Non-live baseline: stop the VM at once and copy all memory.
#[derive(Clone, Debug, Default)]
pub struct StopAndCopy;

impl Strategy for StopAndCopy {
    fn name(&self) -> &str {
        StrategyKind::StopAndCopy.name()
    }
    fn decide(&mut self, _ctx: &StrategyContext<'_>) -> Decision {
        Decision::StopAndCopy
    }
}
