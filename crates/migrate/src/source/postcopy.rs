//! Post-copy on the source. At the switch the VM pauses here for good and
//! the destination learns which pages it must still fetch; after Commit the
//! VM runs there and this side sends those pages: requested ones first, the
//! rest in the background onward from the latest request (pre-paging, Hines
//! & Gopalan 2009: a guest that faulted on one page soon touches the next),
//! until the destination holds every page. Only then is memory released.

use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use wire::{MAX_PAGES_PER_RECORD, PageRequest, PostcopyDone, PostcopyEnd};

use super::engine::Engine;
use super::incoming::{Ask, FromDest};
use super::ms;
use super::relink::Back;
use super::round::RoundKind;
use crate::bitmap::{DirtyBitmap, PAGE_SIZE};
use crate::error::MigrateError;
use crate::progress::Phase;
use crate::report::{Outcome, PostcopyReport, RoundReport, VmLocation};
use crate::strategy::RoundPlan;
use crate::vm::SourceVm;

/// Pages pushed per background batch (256 KiB): against 64 KiB, max-2vcpu's
/// post-copy took 0.83x the time (fewer writes here, fewer UFFDIO_COPYs on
/// the destination); guests take fewer faults, each waiting a little
/// longer (docs/BENCHMARKS.md).
const PUSH_PAGES: u64 = 64;
/// Background pushes wait while the socket holds this much unsent data, so
/// that an answer to a request queues behind at most this much.
const QUEUE_LIMIT: u64 = 256 * 1024;
/// How long to wait for a request while the socket drains: short, since
/// a full queue drains in well under a millisecond on a fast link and the
/// background stream waits on this (1 ms capped loopback at ~376 MB/s).
const QUEUE_WAIT: Duration = Duration::from_micros(200);
/// At most this many pages dirtied since the last harvest are sent in the
/// pause before a switch (1 MiB, 8 ms at 1 Gbit/s); more, and none are:
/// a guest writing that fast touches pages all over its working set.
const PREFETCH_PAGES: u64 = 256;

/// Post-copy's progress: what is left and where the guest last faulted.
struct Serving {
    /// The set at the switch, and what of it is still to send.
    set: DirtyBitmap,
    left: DirtyBitmap,
    /// Next page index the background push looks at.
    cursor: u64,
    report: PostcopyReport,
    bytes_before: u64,
    /// The destination's PostcopyDone, once it came (a final grant
    /// followed it).
    done: Option<PostcopyDone>,
    /// Since the latest reconnection: pages the destination said it held,
    /// and the (sent, zero) counts then; PostcopyEnd counts from there.
    held: u64,
    counted: (u64, u64),
}

impl Serving {
    /// Pages sent so far, data and zero.
    fn sent(&self) -> (u64, u64) {
        let r = &self.report;
        (r.pages_requested + r.pages_pushed, r.zero_pages)
    }

    /// After a reconnection: everything of the set the destination does
    /// not hold is left again.
    fn relinked(&mut self, held: &DirtyBitmap) {
        self.left = self.set.clone();
        self.left.and_not_assign(held);
        self.cursor = 0;
        self.held = held.count();
        self.counted = self.sent();
        self.report.reconnects += 1;
    }

    /// PostcopyEnd's counts: they add up to the set.
    fn end(&self) -> PostcopyEnd {
        let (sent, zero) = self.sent();
        let (sent0, zero0) = self.counted;
        let zero = zero - zero0;
        PostcopyEnd {
            pages: self.held + (sent - sent0) - zero,
            zero_pages: zero,
        }
    }
}

impl<V: SourceVm> Engine<'_, V> {
    /// The switch: pause, take the last dirty pages, and tell the
    /// destination which pages it must fetch (pending ones that may hold
    /// data, or that it holds data for); the state follows.
    pub(super) fn switch_to_postcopy(
        &mut self,
        round: u32,
        mut pending: DirtyBitmap,
        hint: Option<DirtyBitmap>,
        why: &'static str,
    ) -> Result<(), MigrateError> {
        self.enter(Phase::StopAndCopy);
        if self.cancel.is_cancelled() {
            return Err(MigrateError::Cancelled);
        }
        let started = Instant::now();
        let bytes_before = self.bytes();
        let last = self.pause_for_switchover(&mut pending)?;
        let mut hint = hint.and_then(|_| {
            // Paused: a fresh hint is exact.
            let mut h = DirtyBitmap::new(&self.layout);
            self.vm.nonzero_hint(&mut h).then_some(h)
        });
        if let Some(mut hot) = last.filter(|l| (1..=PREFETCH_PAGES).contains(&l.count())) {
            // The pages the guest wrote since the last harvest are the ones
            // it touches first on the destination: send them in the pause.
            let sent = hot.clone();
            self.round(
                round,
                &mut hot,
                &RoundPlan::default(),
                hint.clone(),
                RoundKind::Prefetch,
            )?;
            pending.and_not_assign(&sent);
        }
        let pending_pages = pending.count();
        if let Some(h) = hint.as_mut() {
            // Pages the hint calls zero need no fetching unless the
            // destination holds data for them.
            h.or_assign(&self.dest_nonzero);
            pending.and_assign(h);
        }
        self.w
            .postcopy_begin(pending.words(), self.lease.as_nanos() as u64)
            .map_err(self.wire_err("sending the post-copy set"))?;
        self.plan_transactions()?;
        self.report.postcopy = Some(PostcopyReport {
            trigger: why.to_string(),
            pages_to_fetch: pending.count(),
            ..PostcopyReport::default()
        });
        let duration = started.elapsed();
        self.report.per_round.push(RoundReport {
            round: self.report.per_round.len() as u32 + 1,
            stop_and_copy: true,
            pages_pending: pending_pages,
            pages_skipped: pending.count(),
            zero_pages: pending_pages - pending.count(),
            bytes: self.bytes() - bytes_before,
            duration_ms: ms(duration),
            rate_limit_bps: self.link_bandwidth.map(|b| b.bits_per_sec()),
            ..RoundReport::default()
        });
        self.postcopy = Some(pending);
        Ok(())
    }

    /// After the destination resumed the VM (post-copy only): serve its
    /// pages until it holds every one, then release the memory here. A
    /// failure leaves the VM paused and retired here (never resumed).
    pub(super) fn postcopy(&mut self) -> Result<(), MigrateError> {
        let Some(left) = self.postcopy.take() else {
            return Ok(());
        };
        let resumed = Instant::now();
        let mut s = Serving {
            set: left.clone(),
            left,
            cursor: 0,
            report: self.report.postcopy.take().unwrap_or_default(),
            bytes_before: self.bytes(),
            done: None,
            held: 0,
            counted: (0, 0),
        };
        if let Some(held) = self.resumed.take() {
            // A restarted source: the destination holds these already.
            s.relinked(&held);
            self.txn_resend = true;
        }
        let mut end_sent = false;
        let result = self.serve(&mut s, &mut end_sent);
        s.report.bytes_sent = self.bytes() - s.bytes_before;
        s.report.duration_ms = ms(resumed.elapsed());
        s.report.transactions = self.txns_applied;
        match result {
            Ok(done) => {
                s.report.faults = done.faults;
                let nonzero = |ns: u64| (done.faults > 0).then_some(ns as f64 / 1e6);
                s.report.fault_p50_ms = nonzero(done.fault_p50_ns);
                s.report.fault_p99_ms = nonzero(done.fault_p99_ns);
                if self.leased {
                    // A pre-copy: no post-copy to report, memory kept as
                    // after any pre-copy.
                    tracing::debug!(report = ?s.report, "leased commit done");
                } else {
                    self.report.postcopy = Some(s.report);
                    self.release = true;
                }
                if let Some(j) = self.journal.as_mut() {
                    j.ended();
                }
                self.report.outcome = Outcome::Completed;
                self.enter(Phase::Done);
                Ok(())
            }
            Err(e) => {
                let e = self.incoming.explain(e);
                if !self.leased {
                    self.report.postcopy = Some(s.report);
                }
                if !e.peer_knows() {
                    let _ = self.w.abort(e.abort_code(), &e.to_string());
                    let _ = self.w.flush();
                }
                self.enter(Phase::RolledBack);
                self.settle_interrupted(&e, end_sent);
                Err(e)
            }
        }
    }

    /// Where a post-copy that broke leaves the VM. With a lease out, once
    /// it has certainly run out the destination is fenced: the VM runs
    /// nowhere, paused here as it was at the switch. Without one, the
    /// destination may still run it if every page was sent; after the final
    /// grant it may run there for good, so the VM never resumes here.
    pub(super) fn settle_interrupted(&mut self, e: &MigrateError, end_sent: bool) {
        let what = self.what_broke();
        // A destination that aborts never heard the grant (it never aborts
        // once it owns the VM): the lease decides, as before the grant.
        let aborted = matches!(e, MigrateError::PeerAborted { .. });
        if self.final_sent && !aborted {
            self.report.vm_location = VmLocation::Unknown;
            self.report.outcome = Outcome::InDoubt(format!(
                "{what} broke after the VM was given up to the destination ({e}) and it never confirmed owning it: it runs there if the final grant arrived, else it is fenced there; the VM is kept paused here"
            ));
        } else if let Some(ago) = self.outlast_lease() {
            if self.txns_planned && self.take_back(e) {
                return;
            }
            self.report.vm_location = VmLocation::Nowhere;
            self.report.outcome = Outcome::Interrupted(format!(
                "{what} broke ({e}); the destination's lease ran out {} ago with no renewal, so it is fenced: the VM runs nowhere, paused here as it was at the switch",
                units::format_duration(ago)
            ));
        } else if end_sent {
            self.report.vm_location = VmLocation::Unknown;
            self.report.outcome = Outcome::InDoubt(format!(
                "every page was sent but the destination did not confirm it holds them ({e}); the VM is retired here and may run on the destination"
            ));
        } else {
            self.report.vm_location = VmLocation::Nowhere;
            self.report.outcome = Outcome::Interrupted(format!(
                "post-copy broke with pages left ({e}); the destination cannot go on, the VM stays paused here as it was at the switch"
            ));
        }
    }

    /// What a failure after the switch interrupted, for messages.
    pub(super) fn what_broke(&self) -> &'static str {
        if self.leased {
            "the leased commit"
        } else {
            "post-copy"
        }
    }

    /// Requests first, background pushes between them, then PostcopyEnd and
    /// the destination's PostcopyDone.
    /// A link that fails is dialled again (`relink.rs`); serving goes on
    /// from the pages the destination holds.
    fn serve(
        &mut self,
        s: &mut Serving,
        end_sent: &mut bool,
    ) -> Result<PostcopyDone, MigrateError> {
        loop {
            match self.serve_link(s, end_sent) {
                Ok(done) => return Ok(done),
                Err(e) => {
                    let e = self.incoming.explain(e);
                    match self.redial(e)? {
                        Back::Link(held) => {
                            s.relinked(&held);
                            self.txn_resend = true;
                            *end_sent = false;
                        }
                        // It heard the final grant; only its answer was lost.
                        Back::Owned => return Ok(s.done.unwrap_or_default()),
                    }
                }
            }
        }
    }

    fn serve_link(
        &mut self,
        s: &mut Serving,
        end_sent: &mut bool,
    ) -> Result<PostcopyDone, MigrateError> {
        self.w.get_mut().get_mut().set_rate(self.link_bandwidth);
        // Since when the socket has held more than QUEUE_LIMIT unsent,
        // and how much: a queue that never drains is a stalled link.
        let mut full: Option<(Instant, u64)> = None;
        while !s.left.is_empty() {
            while let Some(ask) = self.incoming.next_request(Duration::ZERO)? {
                self.answer(s, ask)?;
            }
            if s.left.is_empty() {
                break;
            }
            let queued = self.w.get_ref().get_ref().queued();
            if queued > QUEUE_LIMIT {
                match full {
                    Some((_, q)) if queued < q => full = Some((Instant::now(), queued)),
                    Some((since, _)) if since.elapsed() > self.stall => {
                        return Err(MigrateError::Stalled {
                            during: "serving post-copy pages",
                            timeout: self.stall,
                        });
                    }
                    Some(_) => {}
                    None => full = Some((Instant::now(), queued)),
                }
                if let Some(ask) = self.incoming.next_request(QUEUE_WAIT)? {
                    self.answer(s, ask)?;
                }
                continue;
            }
            full = None;
            self.push_background(s)?;
        }
        *end_sent = true;
        self.w
            .postcopy_end(&s.end())
            .and_then(|()| self.w.flush())
            .map_err(self.wire_err("ending post-copy"))?;
        loop {
            match self
                .incoming
                .wait("waiting for the destination to hold every page", false)?
            {
                // Asked before our last pages arrived there: already sent.
                FromDest::PageRequest(_) => continue,
                FromDest::LeaseRequest(seq) => self.grant(seq)?,
                FromDest::Txn(t) => self.apply_txn(*t)?,
                FromDest::PostcopyDone(d) => {
                    if !self.lease.is_zero() {
                        s.done = Some(d);
                        self.grant_for_good()?;
                        self.await_owned()?;
                    }
                    return Ok(d);
                }
                m => return Err(self.incoming.unexpected(m, "instead of PostcopyDone")),
            }
        }
    }

    fn answer(&mut self, s: &mut Serving, ask: Ask) -> Result<(), MigrateError> {
        match ask {
            Ask::Pages(req) => self.serve_request(s, req),
            Ask::Lease(seq) => self.grant(seq),
            Ask::Txn(t) => self.apply_txn(*t),
        }
    }

    /// Sends the pages of `req` not sent yet; the background goes on after them.
    fn serve_request(&mut self, s: &mut Serving, req: PageRequest) -> Result<(), MigrateError> {
        let n = u64::from(req.pages);
        let first = self
            .layout
            .check_range(req.gpa, n * PAGE_SIZE)
            .ok_or_else(|| {
                MigrateError::Protocol(format!(
                    "the destination asked for {n} pages at {:#x}, outside guest memory",
                    req.gpa
                ))
            })?;
        s.report.requests += 1;
        let sent = self.send_left(s, first, n)?;
        s.report.pages_requested += sent;
        s.cursor = first + n;
        self.flush_pages()
    }

    /// Pushes the next few pages from the cursor on (wrapping around).
    fn push_background(&mut self, s: &mut Serving) -> Result<(), MigrateError> {
        let Some(first) = next_set(&s.left, s.cursor).or_else(|| next_set(&s.left, 0)) else {
            return Ok(());
        };
        let sent = self.send_left(s, first, PUSH_PAGES)?;
        s.report.pages_pushed += sent;
        s.cursor = first + PUSH_PAGES;
        self.flush_pages()
    }

    /// Sends every page of `[first, first + n)` still left (as Pages, or as
    /// ZeroPages runs), and takes them out of the set; returns how many.
    fn send_left(&mut self, s: &mut Serving, first: u64, n: u64) -> Result<u64, MigrateError> {
        let mut sent = 0;
        let mut i = first;
        let end = first + n;
        while i < end {
            if !s.left.get(i) {
                i += 1;
                continue;
            }
            let gpa = self
                .layout
                .gpa_of(i)
                .ok_or_else(|| MigrateError::Protocol(format!("page index {i} is not RAM")))?;
            // A run of pages still left, contiguous in guest memory.
            let mut j = i + 1;
            while j < end
                && j - i < MAX_PAGES_PER_RECORD as u64
                && s.left.get(j)
                && self.layout.gpa_of(j) == Some(gpa + (j - i) * PAGE_SIZE)
            {
                j += 1;
            }
            self.send_run(s, gpa, j - i)?;
            for k in i..j {
                s.left.unset(k);
            }
            sent += j - i;
            i = j;
        }
        self.progress.set_remaining(s.left.count() * PAGE_SIZE, 0.0);
        Ok(sent)
    }

    /// Reads `pages` pages at `gpa` and sends them: zero ones as runs.
    fn send_run(&mut self, s: &mut Serving, gpa: u64, pages: u64) -> Result<(), MigrateError> {
        let page = PAGE_SIZE as usize;
        let len = pages as usize * page;
        self.vm
            .memory()
            .read_slice(&mut self.buf[..len], GuestAddress(gpa))
            .map_err(|source| MigrateError::Memory { gpa, source })?;
        let stall = self.stall;
        let is_zero = |buf: &[u8], k: usize| vmstate::is_zero_page(&buf[k * page..(k + 1) * page]);
        let mut k = 0usize;
        while k < pages as usize {
            let zero = is_zero(&self.buf, k);
            let mut end = k + 1;
            while end < pages as usize && is_zero(&self.buf, end) == zero {
                end += 1;
            }
            let at = gpa + (k * page) as u64;
            if zero {
                s.report.zero_pages += (end - k) as u64;
                self.zero_runs.push((at, (end - k) as u64));
            } else {
                self.w
                    .pages(at, &self.buf[k * page..end * page])
                    .map_err(|e| MigrateError::from_wire(e, "sending post-copy pages", stall))?;
            }
            k = end;
        }
        Ok(())
    }

    /// Puts what was queued on the socket now.
    fn flush_pages(&mut self) -> Result<(), MigrateError> {
        if !self.zero_runs.is_empty() {
            let runs = std::mem::take(&mut self.zero_runs);
            self.w
                .zero_pages(&runs)
                .map_err(self.wire_err("sending post-copy pages"))?;
        }
        self.w
            .flush()
            .map_err(self.wire_err("sending post-copy pages"))
    }
}

/// The first set index at or after `from`.
fn next_set(set: &DirtyBitmap, from: u64) -> Option<u64> {
    let words = set.words();
    let mut w = (from / 64) as usize;
    if w >= words.len() {
        return None;
    }
    let mut bits = words[w] & (!0u64 << (from % 64));
    loop {
        if bits != 0 {
            return Some(w as u64 * 64 + u64::from(bits.trailing_zeros()));
        }
        w += 1;
        bits = *words.get(w)?;
    }
}
