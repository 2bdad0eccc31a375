//! Per-page dirtying and sending history, kept for strategies that predict
//! which pages will be written again (exponential smoothing of each page's
//! history, delayed copy of hot pages).

use std::sync::Arc;

use crate::bitmap::{DirtyBitmap, PageLayout};

/// What the engine knows about every page across rounds.
#[derive(Clone, Debug)]
pub struct PageHistory {
    layout: Arc<PageLayout>,
    /// Per page: bit `k` set = the page was dirtied in the `k`-th most recent
    /// completed round (bit 0 = the latest).
    dirty: Vec<u64>,
    /// Per page: how many times its contents were sent (saturating).
    sends: Vec<u16>,
    /// The pages dirtied during the latest completed round.
    last: DirtyBitmap,
    rounds: u32,
}

impl PageHistory {
    /// Empty history over `layout`.
    pub fn new(layout: &Arc<PageLayout>) -> Self {
        let n = layout.index_len() as usize;
        PageHistory {
            layout: Arc::clone(layout),
            dirty: vec![0; n],
            sends: vec![0; n],
            last: DirtyBitmap::new(layout),
            rounds: 0,
        }
    }

    /// Shifts every page's history by one round and records the pages
    /// dirtied during the round that just ended.
    pub fn end_round(&mut self, dirtied: &DirtyBitmap) {
        for (w, &word) in dirtied.words().iter().enumerate() {
            let base = w * 64;
            let Some(slots) = self.dirty.get_mut(base..base + 64) else {
                continue;
            };
            for (bit, h) in slots.iter_mut().enumerate() {
                *h = (*h << 1) | ((word >> bit) & 1);
            }
        }
        self.last.clone_from(dirtied);
        self.rounds += 1;
    }

    /// The pages dirtied during the latest completed round (none before the first).
    pub fn last_dirtied(&self) -> &DirtyBitmap {
        &self.last
    }

    /// Records that page `index` was sent; returns true if it had been sent before.
    #[inline]
    pub fn record_send(&mut self, index: u64) -> bool {
        match self.sends.get_mut(index as usize) {
            Some(s) => {
                let before = *s;
                *s = s.saturating_add(1);
                before > 0
            }
            None => false,
        }
    }

    /// Whether page `index` was ever sent with its contents.
    #[inline]
    pub fn was_sent(&self, index: u64) -> bool {
        self.sends.get(index as usize).is_some_and(|&s| s > 0)
    }

    /// How many times page `index` was sent.
    pub fn sends(&self, index: u64) -> u16 {
        self.sends.get(index as usize).copied().unwrap_or(0)
    }

    /// Dirty history of page `index` (bit 0 = the latest completed round).
    #[inline]
    pub fn dirty_bits(&self, index: u64) -> u64 {
        self.dirty.get(index as usize).copied().unwrap_or(0)
    }

    /// In how many of the last `window` (at most 64) rounds page `index` was dirtied.
    pub fn dirty_count(&self, index: u64, window: u32) -> u32 {
        let mask = if window >= 64 {
            !0
        } else {
            (1u64 << window) - 1
        };
        (self.dirty_bits(index) & mask).count_ones()
    }

    /// Completed rounds recorded so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The layout the history covers.
    pub fn layout(&self) -> &Arc<PageLayout> {
        &self.layout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitmap::PAGE_SIZE;

    #[test]
    fn history_shifts_and_counts() {
        let l = PageLayout::new(&[(0, 130 * PAGE_SIZE)]).unwrap();
        let mut h = PageHistory::new(&l);
        let mut b = DirtyBitmap::new(&l);
        b.set(3);
        b.set(129);
        h.end_round(&b);
        b.unset(3);
        h.end_round(&b);
        assert_eq!(h.dirty_bits(3), 0b10);
        assert_eq!(h.dirty_bits(129), 0b11);
        assert_eq!(h.dirty_count(129, 1), 1);
        assert_eq!(h.dirty_count(129, 64), 2);
        assert_eq!(h.rounds(), 2);
        assert!(h.last_dirtied().get(129) && !h.last_dirtied().get(3));
        assert!(!h.record_send(7));
        assert!(h.record_send(7));
        assert!(h.was_sent(7));
        assert_eq!(h.sends(7), 2);
        assert!(!h.was_sent(8));
    }
}
