//! One round: every pending page (less those the plan holds back or skips)
//! goes out as Pages records or, where the destination holds data for a
//! page that is now zero, as ZeroPages runs; then the round is reported.

use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use wire::{MAX_PAGES_PER_RECORD, RoundBegin, RoundEnd};

use super::engine::Engine;
use super::meter::min_bandwidth;
use super::ms;
use crate::bitmap::{DirtyBitmap, PAGE_SIZE};
use crate::error::{MigrateError, VmOp};
use crate::events::{self, MigrationEvent};
use crate::report::RoundReport;
use crate::strategy::RoundPlan;
use crate::vm::SourceVm;

/// Zero runs buffered before a ZeroPages record is written.
const ZERO_RUN_BATCH: usize = 4096;
/// How often a round that skips re-dirtied pages refreshes its view of them.
const MID_ROUND_HARVEST: Duration = Duration::from_millis(20);

/// Whether the VM runs during a round, and what follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RoundKind {
    /// Pre-copy: the VM runs; what it dirties is pending next round.
    Live,
    /// The stop-and-copy: the VM paused, the round FINAL; the state follows.
    Final,
    /// The stop-and-copy of a leased pre-copy: as `Final`, but not FINAL on
    /// the wire; an empty PostcopyBegin follows (`commit.rs`, "leased").
    Leased,
    /// The VM paused for a switch to post-copy: the pages it dirtied since
    /// the last harvest, so that its first touches on the destination need
    /// no fetch; PostcopyBegin follows.
    Prefetch,
}

/// A round in progress: what it sends, and what it has done so far (kept
/// when it fails half way, for the report).
pub(super) struct Round {
    number: u32,
    /// The VM is paused (stop-and-copy or prefetch).
    last: bool,
    /// The FINAL round: the state follows.
    is_final: bool,
    /// Skip pages dirtied again since the round began.
    skip: bool,
    /// Pages that may hold data; pages outside it are zero (first pass only).
    hint: Option<DirtyBitmap>,
    started: Instant,
    bytes_before: u64,
    pending_pages: u64,
    /// Pending pages the plan held back: pending again next round.
    held: DirtyBitmap,
    /// Pending pages a round cut short by a time limit did not reach:
    /// pending again (for the switchover).
    unreached: Option<DirtyBitmap>,
    /// The plan predicted which pages will be written again (it set
    /// `hold_back`): the report scores the prediction.
    predicts: bool,
    predicted_hot: Option<u64>,
    /// vCPU throttle in force during the round (fraction of time).
    throttle: f64,
    /// Pages the guest dirtied while the round ran.
    dirtied: DirtyBitmap,
    /// Pages looked at so far (sent, zero or skipped).
    visited: u64,
    last_harvest: Instant,
    sent: u64,
    skipped: u64,
    zero: u64,
    /// Zero pages sent as zero runs (the destination held data for them).
    zero_announced: u64,
}

impl Round {
    /// Holds back the pages of `visit` from index `from` on: the round was
    /// cut short, they stay pending.
    fn hold_rest(&mut self, from: u64, visit: &DirtyBitmap) {
        let mut rest = DirtyBitmap::new(visit.layout());
        rest.set_run(from, visit.layout().index_len().saturating_sub(from));
        rest.and_assign(visit);
        self.skipped += rest.count();
        self.unreached = Some(rest);
    }
}

/// The round's prediction scored against what the guest did: precision =
/// held-back pages it dirtied during the round / held-back pages; recall =
/// held-back pages it dirtied / pending pages it dirtied (those whose
/// sending this round would have been wasted). `None` where the
/// denominator is zero.
fn prediction_scores(r: &Round, pending: &DirtyBitmap) -> (Option<f64>, Option<f64>) {
    let held = r.held.count();
    let held_dirtied = r.held.count_and(&r.dirtied);
    let pending_dirtied = pending.count_and(&r.dirtied);
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    (
        ratio(held_dirtied, held),
        ratio(held_dirtied, pending_dirtied),
    )
}

impl<V: SourceVm> Engine<'_, V> {
    /// One round: send every pending page (less skipped and held-back ones);
    /// `pending` becomes the next round's pending set.
    pub(super) fn round(
        &mut self,
        number: u32,
        pending: &mut DirtyBitmap,
        plan: &RoundPlan,
        hint: Option<DirtyBitmap>,
        kind: RoundKind,
    ) -> Result<(), MigrateError> {
        let last = kind != RoundKind::Live;
        // While the VM is paused only the link limits: like QEMU, the
        // switchover is not held back by the background cap.
        let rate = if last {
            self.link_bandwidth
        } else {
            min_bandwidth(
                min_bandwidth(plan.rate_limit, self.max_bandwidth),
                self.link_bandwidth,
            )
        };
        self.w.get_mut().get_mut().set_rate(rate);
        if let Some(t) = plan.throttle
            && !last
        {
            self.set_throttle(t)?;
        }
        let mut r = Round {
            number,
            last,
            is_final: kind == RoundKind::Final,
            skip: plan.skip_redirtied && !last,
            hint,
            started: Instant::now(),
            bytes_before: self.bytes(),
            pending_pages: pending.count(),
            held: DirtyBitmap::new(&self.layout),
            unreached: None,
            predicts: plan.hold_back.is_some() && !last,
            predicted_hot: plan.predicted_hot.filter(|_| !last),
            throttle: self.throttle,
            dirtied: DirtyBitmap::new(&self.layout),
            visited: 0,
            last_harvest: Instant::now(),
            sent: 0,
            skipped: 0,
            zero: 0,
            zero_announced: 0,
        };
        let result = self.send_round(&mut r, pending, plan);
        self.end_round(r, pending, rate.map(|b| b.bits_per_sec()), result)
    }

    /// Reports the round (also when it failed) and, if it completed, makes
    /// what the guest dirtied plus what was held back the next pending set.
    fn end_round(
        &mut self,
        r: Round,
        pending: &mut DirtyBitmap,
        rate_limit_bps: Option<u64>,
        result: Result<(), MigrateError>,
    ) -> Result<(), MigrateError> {
        let duration = r.started.elapsed();
        let bytes = self.bytes() - r.bytes_before;
        let secs = duration.as_secs_f64().max(1e-9);
        let dirtied_pages = r.dirtied.count();
        let (precision, recall) = if r.predicts {
            prediction_scores(&r, pending)
        } else {
            (None, None)
        };
        let report = RoundReport {
            round: r.number,
            stop_and_copy: r.last,
            interrupted: false,
            pages_pending: r.pending_pages,
            pages_dirtied: dirtied_pages,
            pages_sent: r.sent,
            pages_skipped: r.skipped,
            pages_held_back: r.held.count(),
            pages_predicted_hot: r.predicted_hot,
            prediction_precision: precision,
            prediction_recall: recall,
            throttle_pct: r.throttle * 100.0,
            zero_pages: r.zero,
            bytes,
            duration_ms: ms(duration),
            rate_limit_bps,
            transfer_rate_bps: bytes as f64 * 8.0 / secs,
            dirty_rate_bps: (dirtied_pages * PAGE_SIZE) as f64 * 8.0 / secs,
        };
        tracing::debug!(?report, "round done");
        if let Err(e) = result {
            // Keep what the interrupted round did, for the report.
            let report = RoundReport {
                interrupted: true,
                ..report
            };
            events::notify(self.observer.as_ref(), MigrationEvent::Round(&report));
            self.report.per_round.push(report);
            return Err(e);
        }
        self.history.end_round(&r.dirtied);
        *pending = r.dirtied;
        pending.or_assign(&r.held);
        if let Some(u) = &r.unreached {
            pending.or_assign(u);
        }
        self.progress
            .set_remaining(pending.count() * PAGE_SIZE, report.transfer_rate_bps);
        if !r.last {
            self.progress.set_dirty_rate(report.dirty_rate_bps);
        }
        events::notify(self.observer.as_ref(), MigrationEvent::Round(&report));
        self.report.per_round.push(report);
        Ok(())
    }

    /// RoundBegin, the pages, RoundEnd.
    fn send_round(
        &mut self,
        r: &mut Round,
        pending: &DirtyBitmap,
        plan: &RoundPlan,
    ) -> Result<(), MigrateError> {
        self.w
            .round_begin(&RoundBegin {
                round: r.number,
                flags: if r.is_final { RoundBegin::FINAL } else { 0 },
                pages: r.pending_pages,
            })
            .map_err(self.wire_err("sending pages"))?;
        let mut visit = pending.clone();
        if let Some(h) = &plan.hold_back
            && !r.last
        {
            r.held.or_assign(pending);
            r.held.and_assign(h);
            visit.and_not_assign(h);
        }
        r.visited = r.held.count();
        r.last_harvest = Instant::now();
        'runs: for (start, count) in visit.runs() {
            let end = start + count;
            let mut i = start;
            while i < end {
                if !r.last
                    && self.limit_cuts_rounds()
                    && let Some(limit) = self.limits.time_reached(self.started.elapsed())
                {
                    // Out of time: abort now, or cut the round short and
                    // leave what it did not reach pending for the switchover.
                    self.on_limit(limit)?;
                    r.hold_rest(i, &visit);
                    break 'runs;
                }
                if !r.last && self.switch_requested() {
                    // The operator wants post-copy now: the rest stays pending.
                    r.hold_rest(i, &visit);
                    break 'runs;
                }
                let n = (end - i).min(MAX_PAGES_PER_RECORD as u64);
                self.send_batch(r, i, n)?;
                i += n;
            }
        }
        self.flush_zero_runs()?;
        if !r.last {
            self.vm
                .harvest_dirty(&mut r.dirtied)
                .map_err(Self::vm_err(VmOp::HarvestDirty))?;
            if self.stale {
                // All of these are pending next round: the copies there are old.
                self.w
                    .stale(r.dirtied.words())
                    .map_err(self.wire_err("sending pages"))?;
            }
        }
        self.w
            .round_end(&RoundEnd {
                round: r.number,
                pages: r.sent,
                zero_pages: r.zero_announced,
            })
            .and_then(|()| self.w.flush())
            .map_err(self.wire_err("sending pages"))
    }

    /// One batch of up to a record's worth of contiguous pages: checks on
    /// the destination and cancellation first, refreshes the dirty view if
    /// the round skips re-dirtied pages, then sends, then updates progress.
    fn send_batch(&mut self, r: &mut Round, first: u64, n: u64) -> Result<(), MigrateError> {
        self.incoming.poll()?;
        if r.skip && r.last_harvest.elapsed() >= MID_ROUND_HARVEST {
            self.vm
                .harvest_dirty(&mut r.dirtied)
                .map_err(Self::vm_err(VmOp::HarvestDirty))?;
            r.last_harvest = Instant::now();
        }
        self.send_chunk(r, first, n)?;
        r.visited += n;
        let secs = r.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            let rate = (self.bytes() - r.bytes_before) as f64 * 8.0 / secs;
            self.progress
                .set_remaining((r.pending_pages - r.visited) * PAGE_SIZE, rate);
        }
        Ok(())
    }

    /// Sends pages `[first, first + n)` (contiguous, in one region): skips
    /// re-dirtied ones (if the round skips), takes pages outside the hint as
    /// zero, and reads the rest segment by segment.
    fn send_chunk(&mut self, r: &mut Round, first: u64, n: u64) -> Result<(), MigrateError> {
        let base_gpa = self
            .layout
            .gpa_of(first)
            .ok_or_else(|| MigrateError::Protocol(format!("page index {first} is not RAM")))?;
        let skipped = |r: &Round, idx: u64| r.skip && r.dirtied.get(idx);
        let hinted_zero = |r: &Round, idx: u64| r.hint.as_ref().is_some_and(|h| !h.get(idx));
        let mut i = 0u64;
        while i < n {
            let idx = first + i;
            if skipped(r, idx) {
                r.skipped += 1;
                i += 1;
                continue;
            }
            if hinted_zero(r, idx) {
                // Never touched by the guest: zero.
                r.zero += 1;
                if self.dest_nonzero.get(idx) {
                    self.push_zero(r, base_gpa + i * PAGE_SIZE, idx)?;
                }
                i += 1;
                continue;
            }
            // A segment of pages to read: up to the next skipped or hinted-zero page.
            let mut j = i + 1;
            while j < n && !skipped(r, first + j) && !hinted_zero(r, first + j) {
                j += 1;
            }
            self.send_segment(r, idx, base_gpa + i * PAGE_SIZE, j - i)?;
            i = j;
        }
        Ok(())
    }

    /// Reads `pages` pages from `gpa` (page index `first`) and sends the
    /// non-zero ones as Pages records, straight from the read buffer.
    fn send_segment(
        &mut self,
        r: &mut Round,
        first: u64,
        gpa: u64,
        pages: u64,
    ) -> Result<(), MigrateError> {
        let page = PAGE_SIZE as usize;
        let len = pages as usize * page;
        self.vm
            .memory()
            .read_slice(&mut self.buf[..len], GuestAddress(gpa))
            .map_err(|source| MigrateError::Memory { gpa, source })?;
        let is_zero = |buf: &[u8], k: usize| vmstate::is_zero_page(&buf[k * page..(k + 1) * page]);
        let pages = pages as usize;
        let mut k = 0usize;
        while k < pages {
            let idx = first + k as u64;
            if is_zero(&self.buf, k) {
                r.zero += 1;
                if self.dest_nonzero.get(idx) {
                    self.push_zero(r, gpa + k as u64 * PAGE_SIZE, idx)?;
                }
                k += 1;
                continue;
            }
            // A run of non-zero pages: one Pages record.
            let mut end = k + 1;
            while end < pages && !is_zero(&self.buf, end) {
                end += 1;
            }
            let stall = self.stall;
            self.w
                .pages(gpa + k as u64 * PAGE_SIZE, &self.buf[k * page..end * page])
                .map_err(|e| MigrateError::from_wire(e, "sending pages", stall))?;
            let mut resent = 0;
            for p in k..end {
                let idx = first + p as u64;
                if self.history.record_send(idx) {
                    resent += 1;
                }
                self.dest_nonzero.set(idx);
            }
            self.report.pages_resent += resent;
            self.progress.add_resent(resent * PAGE_SIZE);
            r.sent += (end - k) as u64;
            k = end;
        }
        Ok(())
    }

    /// Queues page `idx` at `gpa` as zero on the destination.
    fn push_zero(&mut self, r: &mut Round, gpa: u64, idx: u64) -> Result<(), MigrateError> {
        self.dest_nonzero.unset(idx);
        r.zero_announced += 1;
        match self.zero_runs.last_mut() {
            Some((g, n)) if *g + *n * PAGE_SIZE == gpa => *n += 1,
            _ => self.zero_runs.push((gpa, 1)),
        }
        if self.zero_runs.len() >= ZERO_RUN_BATCH {
            self.flush_zero_runs()?;
        }
        Ok(())
    }

    /// Writes the queued zero runs as one ZeroPages record.
    fn flush_zero_runs(&mut self) -> Result<(), MigrateError> {
        if self.zero_runs.is_empty() {
            return Ok(());
        }
        let stall = self.stall;
        self.w
            .zero_pages(&self.zero_runs)
            .map_err(|e| MigrateError::from_wire(e, "sending pages", stall))?;
        self.zero_runs.clear();
        Ok(())
    }
}
