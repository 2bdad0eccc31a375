//! Page layout of guest memory and the dirty bitmap over it.
//!
//! Pages are numbered in one index space over all RAM regions of a
//! [`vmstate::VmConfig`]. Each region starts on a 64-page (one `u64` word)
//! boundary of that space, so the VMM can OR a KVM memslot's dirty bitmap
//! straight into [`DirtyBitmap::region_words_mut`] word by word.

use std::sync::Arc;

use thiserror::Error;

/// Size of a guest page; the unit of dirty tracking and of page transfer.
pub const PAGE_SIZE: u64 = 4096;
const PAGE_SHIFT: u32 = 12;

/// A RAM layout that cannot be tracked page by page.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("guest memory has no RAM regions")]
    Empty,
    #[error(
        "RAM region {index} (start {start:#x}, length {len:#x}) is not 4 KiB aligned or is empty"
    )]
    Unaligned { index: usize, start: u64, len: u64 },
    #[error("RAM region {index} (start {start:#x}) overlaps or precedes the region before it")]
    Overlap { index: usize, start: u64 },
    #[error(
        "RAM region {index} (start {start:#x}, length {len:#x}) ends beyond the 64-bit address space"
    )]
    Overflow { index: usize, start: u64, len: u64 },
}

/// One RAM region in the page index space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionLayout {
    /// Guest-physical start address.
    pub gpa: u64,
    /// Number of pages.
    pub pages: u64,
    /// Index of the region's first page (a multiple of 64).
    pub first_index: u64,
}

/// Maps page indices to guest-physical addresses and back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageLayout {
    regions: Vec<RegionLayout>,
    /// Size of the index space (including the padding after each region).
    index_len: u64,
    pages: u64,
}

impl PageLayout {
    /// Builds the layout for `(start, length)` regions in ascending, non-overlapping order.
    pub fn new(regions: &[(u64, u64)]) -> Result<Arc<Self>, LayoutError> {
        if regions.is_empty() {
            return Err(LayoutError::Empty);
        }
        let mut out = Vec::with_capacity(regions.len());
        let mut next_index = 0u64;
        let mut prev_end = 0u64;
        let mut pages = 0u64;
        for (index, &(start, len)) in regions.iter().enumerate() {
            if len == 0 || start % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 {
                return Err(LayoutError::Unaligned { index, start, len });
            }
            let end = start
                .checked_add(len)
                .ok_or(LayoutError::Overflow { index, start, len })?;
            if index > 0 && start < prev_end {
                return Err(LayoutError::Overlap { index, start });
            }
            prev_end = end;
            let n = len >> PAGE_SHIFT;
            out.push(RegionLayout {
                gpa: start,
                pages: n,
                first_index: next_index,
            });
            pages += n;
            next_index += n.div_ceil(64) * 64;
        }
        Ok(Arc::new(PageLayout {
            regions: out,
            index_len: next_index,
            pages,
        }))
    }

    /// The regions, in address order.
    pub fn regions(&self) -> &[RegionLayout] {
        &self.regions
    }

    /// Number of guest pages (excluding padding).
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Guest RAM in bytes.
    pub fn bytes(&self) -> u64 {
        self.pages * PAGE_SIZE
    }

    /// Size of the index space; every valid index is below it.
    pub fn index_len(&self) -> u64 {
        self.index_len
    }

    /// Guest-physical address of page `index`, if it is a real page.
    pub fn gpa_of(&self, index: u64) -> Option<u64> {
        let r = self.region_of_index(index)?;
        let off = index - r.first_index;
        (off < r.pages).then(|| r.gpa + (off << PAGE_SHIFT))
    }

    /// Page index holding guest-physical address `gpa`, if it is RAM.
    pub fn index_of(&self, gpa: u64) -> Option<u64> {
        let i = self.regions.partition_point(|r| r.gpa <= gpa);
        let r = self.regions.get(i.checked_sub(1)?)?;
        let page = (gpa - r.gpa) >> PAGE_SHIFT;
        (page < r.pages).then_some(r.first_index + page)
    }

    /// Checks that `[gpa, gpa + len)` is page aligned and inside one region;
    /// returns the index of its first page.
    pub fn check_range(&self, gpa: u64, len: u64) -> Option<u64> {
        if !gpa.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
            return None;
        }
        let first = self.index_of(gpa)?;
        if len == 0 {
            return Some(first);
        }
        let last = self.index_of(gpa.checked_add(len - 1)?)?;
        (last - first + 1 == len >> PAGE_SHIFT).then_some(first)
    }

    fn region_of_index(&self, index: u64) -> Option<&RegionLayout> {
        let i = self.regions.partition_point(|r| r.first_index <= index);
        self.regions.get(i.checked_sub(1)?)
    }
}

/// One bit per guest page: set means "dirty" (or, in other uses, "selected").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirtyBitmap {
    layout: Arc<PageLayout>,
    words: Vec<u64>,
}

impl DirtyBitmap {
    /// An all-clear bitmap over `layout`.
    pub fn new(layout: &Arc<PageLayout>) -> Self {
        DirtyBitmap {
            layout: Arc::clone(layout),
            words: vec![0; (layout.index_len / 64) as usize],
        }
    }

    /// A bitmap with every real page set.
    pub fn full(layout: &Arc<PageLayout>) -> Self {
        let mut b = Self::new(layout);
        b.fill();
        b
    }

    /// The layout this bitmap covers.
    pub fn layout(&self) -> &Arc<PageLayout> {
        &self.layout
    }

    /// Sets page `index`. Indices outside the layout are ignored.
    #[inline]
    pub fn set(&mut self, index: u64) {
        if let Some(w) = self.words.get_mut((index / 64) as usize) {
            *w |= 1 << (index % 64);
        }
    }

    /// Clears page `index`.
    #[inline]
    pub fn unset(&mut self, index: u64) {
        if let Some(w) = self.words.get_mut((index / 64) as usize) {
            *w &= !(1 << (index % 64));
        }
    }

    /// Whether page `index` is set.
    #[inline]
    pub fn get(&self, index: u64) -> bool {
        self.words
            .get((index / 64) as usize)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    /// Marks every page overlapping `[gpa, gpa + len)` (for the VMM's own
    /// writes into guest memory). Returns false if part of the range is not RAM.
    pub fn mark_gpa_range(&mut self, gpa: u64, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let start = gpa & !(PAGE_SIZE - 1);
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        let mut all = true;
        let mut a = start;
        while a < end {
            match self.layout.index_of(a) {
                Some(i) => self.set(i),
                None => all = false,
            }
            a += PAGE_SIZE;
        }
        all
    }

    /// Clears every bit.
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Sets every real page (padding bits stay clear).
    pub fn fill(&mut self) {
        self.words.fill(0);
        for r in self.layout.regions.clone() {
            self.set_run(r.first_index, r.pages);
        }
    }

    /// Sets `count` pages starting at `index`.
    pub fn set_run(&mut self, mut index: u64, mut count: u64) {
        while count > 0 {
            let bit = index % 64;
            let n = (64 - bit).min(count);
            let mask = if n == 64 {
                !0
            } else {
                ((1u64 << n) - 1) << bit
            };
            if let Some(w) = self.words.get_mut((index / 64) as usize) {
                *w |= mask;
            }
            index += n;
            count -= n;
        }
    }

    /// Number of set pages.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether no page is set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// `self |= other`.
    pub fn or_assign(&mut self, other: &DirtyBitmap) {
        debug_assert_eq!(self.words.len(), other.words.len());
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// Number of pages set in both `self` and `other`.
    pub fn count_and(&self, other: &DirtyBitmap) -> u64 {
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| u64::from((a & b).count_ones()))
            .sum()
    }

    /// `self &= other`.
    pub fn and_assign(&mut self, other: &DirtyBitmap) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= b;
        }
    }

    /// `self &= !other`.
    pub fn and_not_assign(&mut self, other: &DirtyBitmap) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= !b;
        }
    }

    /// Moves every bit of `self` into `into` (OR) and clears `self`.
    pub fn drain_into(&mut self, into: &mut DirtyBitmap) {
        for (a, b) in self.words.iter_mut().zip(into.words.iter_mut()) {
            *b |= std::mem::take(a);
        }
    }

    /// The words of the whole index space.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// The words of the whole index space, for merging bitmaps word by word.
    /// Bits of padding pages (past a region's end) must stay clear.
    pub fn words_mut(&mut self) -> &mut [u64] {
        &mut self.words
    }

    /// The words covering region `region` (bit i = page i of the region),
    /// the same layout as a KVM memslot dirty bitmap. Bits past the region's
    /// last page must stay clear.
    pub fn region_words_mut(&mut self, region: usize) -> Option<&mut [u64]> {
        let r = self.layout.regions.get(region)?;
        let first = (r.first_index / 64) as usize;
        let n = r.pages.div_ceil(64) as usize;
        self.words.get_mut(first..first + n)
    }

    /// The words covering region `region`.
    pub fn region_words(&self, region: usize) -> Option<&[u64]> {
        let r = self.layout.regions.get(region)?;
        let first = (r.first_index / 64) as usize;
        let n = r.pages.div_ceil(64) as usize;
        self.words.get(first..first + n)
    }

    /// Indices of the set pages, ascending.
    pub fn iter(&self) -> SetBits<'_> {
        SetBits {
            words: &self.words,
            word: 0,
            current: self.words.first().copied().unwrap_or(0),
        }
    }

    /// Runs of consecutive set pages as `(first_index, count)`, ascending.
    /// A run never crosses a region boundary (regions are separated by padding
    /// or start on a fresh word, and a run is cut where a region ends).
    pub fn runs(&self) -> Runs<'_> {
        Runs {
            bitmap: self,
            bits: self.iter(),
            pending: None,
        }
    }
}

/// Iterator over set bits of a [`DirtyBitmap`].
pub struct SetBits<'a> {
    words: &'a [u64],
    word: usize,
    current: u64,
}

impl Iterator for SetBits<'_> {
    type Item = u64;

    #[inline]
    fn next(&mut self) -> Option<u64> {
        loop {
            if self.current != 0 {
                let bit = self.current.trailing_zeros() as u64;
                self.current &= self.current - 1;
                return Some(self.word as u64 * 64 + bit);
            }
            self.word += 1;
            self.current = *self.words.get(self.word)?;
        }
    }
}

/// Iterator over runs of set bits of a [`DirtyBitmap`].
pub struct Runs<'a> {
    bitmap: &'a DirtyBitmap,
    bits: SetBits<'a>,
    pending: Option<u64>,
}

impl Iterator for Runs<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let start = self.pending.take().or_else(|| self.bits.next())?;
        let region_end = self
            .bitmap
            .layout
            .region_of_index(start)
            .map_or(start + 1, |r| r.first_index + r.pages);
        let mut len = 1;
        // Fast path: whole words of ones.
        loop {
            let idx = start + len;
            if idx >= region_end {
                break;
            }
            if idx % 64 == 0 && self.bits.current == 0 {
                match self.bitmap.words.get((idx / 64) as usize) {
                    Some(&w) if w == !0 && idx + 64 <= region_end => {
                        len += 64;
                        self.bits.word = (idx / 64) as usize;
                        self.bits.current = 0;
                        continue;
                    }
                    _ => {}
                }
            }
            match self.bits.next() {
                Some(i) if i == idx => len += 1,
                Some(i) => {
                    self.pending = Some(i);
                    break;
                }
                None => break,
            }
        }
        Some((start, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Arc<PageLayout> {
        // 100 pages at 0, 3 pages at 1 MiB, 130 pages at 4 GiB.
        PageLayout::new(&[
            (0, 100 * PAGE_SIZE),
            (0x10_0000, 3 * PAGE_SIZE),
            (0x1_0000_0000, 130 * PAGE_SIZE),
        ])
        .unwrap()
    }

    #[test]
    fn layout_maps_both_ways() {
        let l = layout();
        assert_eq!(l.pages(), 233);
        assert_eq!(l.regions()[1].first_index, 128);
        assert_eq!(l.regions()[2].first_index, 192);
        assert_eq!(l.index_of(0x10_1000), Some(129));
        assert_eq!(l.gpa_of(129), Some(0x10_1000));
        assert_eq!(l.index_of(100 * PAGE_SIZE), None);
        assert_eq!(l.gpa_of(100), None);
        assert_eq!(l.index_of(0x1_0000_0000 + 129 * PAGE_SIZE), Some(192 + 129));
        assert_eq!(l.index_of(0x1_0000_0000 + 130 * PAGE_SIZE), None);
        for i in 0..l.index_len() {
            if let Some(g) = l.gpa_of(i) {
                assert_eq!(l.index_of(g), Some(i));
                assert_eq!(l.index_of(g + 4095), Some(i));
            }
        }
        assert_eq!(l.check_range(0x10_0000, 3 * PAGE_SIZE), Some(128));
        assert_eq!(l.check_range(0x10_0000, 4 * PAGE_SIZE), None);
        assert_eq!(l.check_range(0x10_0001, PAGE_SIZE), None);
        assert_eq!(l.check_range(99 * PAGE_SIZE, 2 * PAGE_SIZE), None);
    }

    #[test]
    fn layout_rejects_bad_regions() {
        assert_eq!(PageLayout::new(&[]), Err(LayoutError::Empty));
        assert!(matches!(
            PageLayout::new(&[(0, 100)]),
            Err(LayoutError::Unaligned { .. })
        ));
        assert!(matches!(
            PageLayout::new(&[(0, 8192), (4096, 4096)]),
            Err(LayoutError::Overlap { index: 1, .. })
        ));
        assert!(matches!(
            PageLayout::new(&[(u64::MAX - 4095, 8192)]),
            Err(LayoutError::Unaligned { .. }) | Err(LayoutError::Overflow { .. })
        ));
    }

    #[test]
    fn fill_count_iter_runs() {
        let l = layout();
        let mut b = DirtyBitmap::full(&l);
        assert_eq!(b.count(), 233);
        let runs: Vec<_> = b.runs().collect();
        assert_eq!(runs, vec![(0, 100), (128, 3), (192, 130)]);
        assert_eq!(b.iter().count(), 233);
        b.unset(5);
        b.unset(193);
        let runs: Vec<_> = b.runs().collect();
        assert_eq!(runs, vec![(0, 5), (6, 94), (128, 3), (192, 1), (194, 128)]);
        let total: u64 = runs.iter().map(|r| r.1).sum();
        assert_eq!(total, b.count());
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.runs().count(), 0);
    }

    #[test]
    fn runs_match_naive() {
        let l = PageLayout::new(&[(0, 1000 * PAGE_SIZE), (1 << 30, 300 * PAGE_SIZE)]).unwrap();
        let mut b = DirtyBitmap::new(&l);
        let mut x = 12345u64;
        for _ in 0..600 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = x % l.index_len();
            if l.gpa_of(i).is_some() {
                b.set_run(i, (x >> 40) % 90 + 1);
            }
        }
        // Clear padding bits possibly set by set_run overflowing a region.
        let mut valid = DirtyBitmap::full(&l);
        valid.and_assign(&b);
        let b = valid;
        let mut naive = Vec::new();
        let mut cur: Option<(u64, u64)> = None;
        for i in b.iter() {
            let same_region = cur.is_some_and(|(s, n)| {
                s + n == i
                    && l.region_of_index(s).unwrap().first_index
                        == l.region_of_index(i).unwrap().first_index
            });
            if same_region {
                cur.as_mut().unwrap().1 += 1;
            } else {
                naive.extend(cur.take());
                cur = Some((i, 1));
            }
        }
        naive.extend(cur);
        assert_eq!(b.runs().collect::<Vec<_>>(), naive);
    }

    #[test]
    fn word_ops_and_regions() {
        let l = layout();
        let mut a = DirtyBitmap::new(&l);
        let mut b = DirtyBitmap::new(&l);
        a.set(1);
        a.set(130);
        b.set(130);
        b.set(200);
        let mut c = a.clone();
        c.or_assign(&b);
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![1, 130, 200]);
        c.and_not_assign(&a);
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![200]);
        a.and_assign(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![130]);
        let words = b.region_words_mut(2).unwrap();
        assert_eq!(words.len(), 3);
        words[0] |= 1 << 9;
        assert!(b.get(192 + 9));
        assert!(b.mark_gpa_range(0x10_0ffe, 4));
        assert!(b.get(128) && b.get(129));
        assert!(!b.mark_gpa_range(99 * PAGE_SIZE, 2 * PAGE_SIZE));
        let mut d = DirtyBitmap::new(&l);
        b.drain_into(&mut d);
        assert!(b.is_empty());
        assert_eq!(d.count(), 6); // 128, 129, 130, 200, 201 and 99
    }
}
