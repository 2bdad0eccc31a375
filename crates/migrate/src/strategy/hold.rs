//! The pages a round holds back: the pending pages a strategy predicts will
//! be written again, the likeliest first, within a budget that keeps the
//! stop-and-copy (which sends them all) near the downtime target.

use super::StrategyContext;
use super::params::{ParamReader, Range, StrategyError};
use crate::bitmap::{DirtyBitmap, PAGE_SIZE};

/// `hold-budget`: the share of the downtime target's bytes that held-back
/// pages may take (1.0 = all of it), or `None` (`unlimited`, the seeds'
/// rule: every predicted page is held).
pub(super) fn read_budget(r: &mut ParamReader<'_>) -> Result<Option<f64>, StrategyError> {
    r.number_or_unlimited("hold-budget", Some(1.0), Range::above(0.0, true))
}

/// Pages that `share` of the downtime target holds at the measured
/// bandwidth (`None` = no limit). Before any round is measured, nothing.
pub(super) fn budget_pages(ctx: &StrategyContext<'_>, share: Option<f64>) -> Option<u64> {
    let share = share?;
    let bw = ctx.measured_bandwidth_bps().unwrap_or(0.0);
    let bytes = bw / 8.0 * ctx.max_downtime.as_secs_f64() * share;
    Some((bytes / PAGE_SIZE as f64) as u64)
}

/// What a strategy holds back this round.
pub(super) struct Held {
    pub pages: DirtyBitmap,
    /// Pages it predicted hot (its candidates, before the budget).
    pub predicted: u64,
    pub held: u64,
}

/// The pending pages that `score` rates (`Some`: predicted hot, higher =
/// likelier to be written again), at most `budget` of them, the highest
/// scores first (ties in page order).
pub(super) fn select(
    pending: &DirtyBitmap,
    budget: Option<u64>,
    score: impl Fn(u64) -> Option<u8>,
) -> Held {
    let mut hist = [0u64; 256];
    for page in pending.iter() {
        if let Some(s) = score(page) {
            hist[s as usize] += 1;
        }
    }
    let predicted: u64 = hist.iter().sum();
    let budget = budget.unwrap_or(u64::MAX);
    // The lowest score taken, and how many of that score fit.
    let (mut cutoff, mut at_cutoff) = (0usize, u64::MAX);
    let mut taken = 0u64;
    for s in (0..256).rev() {
        if taken + hist[s] > budget {
            cutoff = s;
            at_cutoff = budget - taken;
            break;
        }
        taken += hist[s];
    }
    let mut pages = DirtyBitmap::new(pending.layout());
    let mut held = 0;
    for page in pending.iter() {
        let Some(s) = score(page) else { continue };
        let s = s as usize;
        if s > cutoff || (s == cutoff && at_cutoff > 0) {
            if s == cutoff && at_cutoff != u64::MAX {
                at_cutoff -= 1;
            }
            pages.set(page);
            held += 1;
        }
    }
    Held {
        pages,
        predicted,
        held,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitmap::PageLayout;

    #[test]
    fn the_budget_takes_the_likeliest_pages_first() {
        let l = PageLayout::new(&[(0, 100 * PAGE_SIZE)]).unwrap();
        let mut pending = DirtyBitmap::new(&l);
        pending.set_run(0, 10);
        // Pages 0..10 scored 0..10; odd pages are not predicted hot.
        let score = |p: u64| p.is_multiple_of(2).then_some(p as u8);
        let all = select(&pending, None, score);
        assert_eq!((all.predicted, all.held), (5, 5));
        let some = select(&pending, Some(2), score);
        assert_eq!((some.predicted, some.held), (5, 2));
        assert!(some.pages.get(8) && some.pages.get(6) && !some.pages.get(4));
        let none = select(&pending, Some(0), score);
        assert_eq!(none.held, 0);
        // Ties are cut in page order.
        let tie = select(&pending, Some(3), |_| Some(7));
        assert_eq!(tie.pages.iter().collect::<Vec<_>>(), vec![0, 1, 2]);
    }
}
