//! Seed 003 (docs/MIGRATION.md, "delayed"): Xen's pre-copy with dirty
//! pages delayed by temporal locality.
//!
//! Before each round, every pending page is put in a state from its
//! history over the last `window` rounds (`c` = rounds in which it was
//! dirtied, `d` = dirtied in the latest one), and each state has its rule:
//!
//! ```text
//!  state      condition             rule
//!  clean      not pending           nothing to send
//!  cold       c <= 1                send now
//!  warm       2 <= c < hot, d       delay one round
//!  cooled     2 <= c < hot, not d   send now (delayed, not written since)
//!  hot        c >= hot              delay to the stop-and-copy
//!
//!          dirtied            dirtied again              dirtied in >= hot
//!  clean ----------> cold ---------------> warm ------------------------> hot
//!    ^                 |                     | not dirtied                |
//!    |      sent       |                     v                            |
//!    +-----------------+------------------ cooled <-----------------------+
//!                                   sent           fewer than hot in the window
//! ```
//!
//! The window slides by one round each round, so a hot page that stops
//! being written cools down after `window - hot + 1` rounds and is sent.

use super::hold::{self, Held};
use super::params::{ParamReader, Range, StrategyError};
use super::xen::XenParams;
use super::{Decision, Strategy, StrategyContext, StrategyKind};
use crate::convergence::Limits;

/// Parameters of [`Delayed`].
#[derive(Clone, Debug, PartialEq)]
pub struct DelayedParams {
    /// Rounds of history a state looks at (`window`).
    pub window: u32,
    /// Dirtied in at least this many of them = hot (`hot`).
    pub hot: u32,
    /// Share of the downtime target held-back pages may take (`hold-budget`;
    /// `None` = `unlimited`).
    pub hold_budget: Option<f64>,
    /// Xen's schedule and end rules.
    pub xen: XenParams,
}

impl Default for DelayedParams {
    fn default() -> Self {
        DelayedParams {
            window: 4,
            hot: 3,
            hold_budget: Some(1.0),
            xen: XenParams::default(),
        }
    }
}

impl DelayedParams {
    pub(super) fn read(r: &mut ParamReader<'_>) -> Result<Self, StrategyError> {
        let d = DelayedParams::default();
        let window = r.count("window", d.window, Range::closed(2.0, 64.0))?;
        let hot = r.count("hot", d.hot, Range::closed(2.0, 64.0))?;
        if hot > window {
            return Err(r.bad(
                "hot",
                &hot.to_string(),
                format_args!("is above window ({window})"),
            ));
        }
        Ok(DelayedParams {
            window,
            hot,
            hold_budget: hold::read_budget(r)?,
            xen: XenParams::read(r)?,
        })
    }
}

/// A pending page's state (docs on the module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PageState {
    Cold,
    Warm,
    Cooled,
    Hot,
}

impl PageState {
    /// The state of a pending page dirtied in `count` of the window's
    /// rounds, the latest among them if `latest`.
    pub fn of(count: u32, latest: bool, p: &DelayedParams) -> PageState {
        if count >= p.hot {
            PageState::Hot
        } else if count <= 1 {
            PageState::Cold
        } else if latest {
            PageState::Warm
        } else {
            PageState::Cooled
        }
    }

    /// Whether this round holds the page back.
    pub fn delays(self) -> bool {
        matches!(self, PageState::Warm | PageState::Hot)
    }
}

/// Seed 003's delayed copy on Xen's loop: pending pages are classified by
/// temporal locality (module docs); warm pages wait one round, hot pages
/// wait for the stop-and-copy (hot first, then warm, within
/// `hold_budget`); the rest go at Xen's rates (from the guest's whole
/// dirty rate, as in `xen`), and Xen's end rules count the pages a round
/// would send.
#[derive(Clone, Debug, Default)]
pub struct Delayed {
    params: DelayedParams,
}

impl Delayed {
    pub fn new(params: DelayedParams) -> Self {
        Delayed { params }
    }

    fn hold(&self, ctx: &StrategyContext<'_>) -> Held {
        let p = &self.params;
        let budget = hold::budget_pages(ctx, p.hold_budget);
        let held = hold::select(ctx.pending, budget, |page| {
            let count = ctx.history.dirty_count(page, p.window);
            let latest = ctx.history.dirty_bits(page) & 1 == 1;
            // Hot pages before warm ones, the more often dirtied first.
            PageState::of(count, latest, p)
                .delays()
                .then_some((count * 2 + u32::from(latest)) as u8)
        });
        // Only hot pages count as predicted hot; warm ones just wait a round.
        let hot = ctx
            .pending
            .iter()
            .filter(|&page| ctx.history.dirty_count(page, p.window) >= p.hot)
            .count() as u64;
        Held {
            predicted: hot,
            ..held
        }
    }
}

impl Strategy for Delayed {
    fn name(&self) -> &str {
        StrategyKind::Delayed.name()
    }

    fn decide(&mut self, ctx: &StrategyContext<'_>) -> Decision {
        let held = self.hold(ctx);
        let sendable = ctx.pending_pages - held.held;
        // Xen's rates unchanged (the guest's whole dirty rate), so that the
        // delay is the only difference from `xen`.
        match self
            .params
            .xen
            .schedule(ctx, sendable, ctx.last_dirty_rate_bps())
        {
            Decision::Round(mut plan) => {
                plan.predicted_hot = Some(held.predicted);
                plan.hold_back = Some(held.pages);
                Decision::Round(plan)
            }
            stop => stop,
        }
    }

    fn limits(&self) -> Limits {
        self.params.xen.end.limits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::tests::Fixture;

    fn states(history: &[bool]) -> Vec<PageState> {
        // The state after each round of `history` (true = dirtied), for a
        // page that stays pending.
        let p = DelayedParams::default();
        let mut bits = 0u64;
        history
            .iter()
            .map(|&d| {
                bits = (bits << 1) | u64::from(d);
                let count = (bits & ((1 << p.window) - 1)).count_ones();
                PageState::of(count, d, &p)
            })
            .collect()
    }

    #[test]
    fn transitions() {
        use PageState::*;
        // Dirtied once: cold (send now).
        assert_eq!(states(&[true]), [Cold]);
        // Dirtied twice in the window: warm (wait a round); not written in
        // the round it waited: cooled (send).
        assert_eq!(states(&[true, true, false]), [Cold, Warm, Cooled]);
        // Written again while waiting: hot, until fewer than 3 of the last
        // 4 rounds saw it written.
        assert_eq!(
            states(&[true, true, true, true, false, false]),
            [Cold, Warm, Hot, Hot, Hot, Cooled]
        );
        assert_eq!(
            states(&[true, false, true, false, true]),
            [Cold, Cold, Warm, Cooled, Warm]
        );
        assert!(!Cold.delays() && !Cooled.delays() && Warm.delays() && Hot.delays());
    }

    #[test]
    fn hot_and_warm_pages_are_held_cold_ones_sent() {
        let mut s = Delayed::new(DelayedParams {
            hold_budget: None,
            ..DelayedParams::default()
        });
        let mut f = Fixture::new(1000);
        let cap = Some(1_000_000_000);
        assert!(matches!(s.decide(&f.ctx(1, 0, cap)), Decision::Round(_)));
        // Pages 0..100 dirtied in 3 rounds (hot), 100..200 in 2 (warm),
        // 200..300 in the last only (cold).
        f.dirty_round(&[(0, 200)], 100e6);
        f.dirty_round(&[(0, 100)], 100e6);
        f.dirty_round(&[(0, 300)], 100e6);
        let Decision::Round(p) = s.decide(&f.ctx(4, 1 << 20, cap)) else {
            panic!()
        };
        let held = p.hold_back.unwrap();
        assert_eq!(p.predicted_hot, Some(100));
        assert_eq!(held.count(), 200);
        assert!(held.get(0) && held.get(150) && !held.get(250));
        // Xen's rate: the dirty rate (300 pages in 1 s) + 50 Mbit/s, not
        // below 100 Mbit/s.
        assert_eq!(p.rate_limit.map(|b| b.bits_per_sec()), Some(100_000_000));
        assert!(p.skip_redirtied);
    }

    #[test]
    fn the_budget_keeps_hot_pages_first() {
        let mut s = Delayed::new(DelayedParams::default());
        let mut f = Fixture::new(10_000);
        f.dirty_round(&[(0, 10_000)], 10e6);
        f.dirty_round(&[(0, 10_000)], 10e6);
        f.dirty_round(&[(5_000, 5_000)], 10e6);
        // 10 Mbit/s x 300 ms = 91 pages of budget: all hot (5000..).
        let Decision::Round(p) = s.decide(&f.ctx(4, 1 << 20, None)) else {
            panic!()
        };
        let held = p.hold_back.unwrap();
        assert_eq!(held.count(), 91);
        assert!(held.iter().all(|pg| pg >= 5_000));
    }

    #[test]
    fn parameters_are_checked() {
        use crate::strategy::{StrategyKind, StrategyParams};
        let build = |kv: &[&str]| {
            StrategyKind::Delayed
                .build_with(&StrategyParams::parse(kv).unwrap())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(build(&["window=8", "hot=5", "start-rate=200Mbit"]).is_ok());
        assert_eq!(
            build(&["window=3", "hot=4"]).unwrap_err(),
            "strategy delayed: hot=4: is above window (3)"
        );
        assert!(build(&["window=1"]).unwrap_err().contains("[2, 64]"));
    }
}
