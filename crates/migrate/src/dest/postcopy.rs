//! Post-copy on the destination. At PostcopyBegin (the VM paused) the pages
//! of the set are dropped and their first touch intercepted; after Commit
//! the VM runs while two threads fill its memory: this session's thread
//! installs what the source sends, and a fault thread turns each touch of a
//! missing page into a request for the block around it. The received-page
//! bitmap ([`Switch::received`]) is the resume point a reconnect would start
//! from (docs/PROTOCOL.md). With a lease (`lease`), two more threads keep
//! it renewed and fence the VM when it lapses; the VM is ours for good only
//! once the source's final grant follows our PostcopyDone.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wire::{Message, MessageReader, PostcopyBegin, PostcopyDone, PostcopyEnd};

use super::faults::{FaultLog, MAX_FAULT_BLOCK_PAGES, SharedBits, fault_loop};

use super::lease::{self, Lease};
use super::relink::{Relink, resume_link};
use super::session::{Arrival, Receiver, SharedWriter, Stage, lock};
use super::txn::{self, Txns};
use crate::bitmap::{DirtyBitmap, PAGE_SIZE, PageLayout};
use crate::error::{MigrateError, VmOp};
use crate::vm::{DestinationVm, Fence, PostcopyMemory};

/// What the switch left to fetch, and how it arrives.
pub(super) struct Switch {
    /// Pages of the set (dropped at the switch; fixed from then on).
    pub(super) missing: DirtyBitmap,
    /// Pages of the set received since (installed).
    pub(super) received: SharedBits,
    pub(super) received_count: AtomicU64,
    pub(super) memory: Arc<dyn PostcopyMemory>,
    pub(super) faults: FaultLog,
    /// Pages per request ([`DestOptions::fault_block_pages`](super::DestOptions)).
    pub(super) block: u64,
    /// The lease period PostcopyBegin set, and how to fence (none: no lease).
    pub(super) lease: Option<(Duration, Arc<dyn Fence>)>,
    /// Bumped at each reconnection: the fault thread forgets what it asked
    /// for on the link that broke.
    pub(super) epoch: AtomicU64,
    pub(super) layout: Arc<PageLayout>,
    /// TxnPlan's interval: send transactions (none: no TxnPlan came).
    pub(super) txn_interval: Option<Duration>,
}

/// The memory of a switch with nothing to fetch: every page is present.
struct AllPresent;

impl PostcopyMemory for AllPresent {
    fn wait_fault(&self, timeout: Duration) -> Result<Option<u64>, crate::vm::VmError> {
        std::thread::sleep(timeout);
        Ok(None)
    }

    fn install(&self, _gpa: u64, _data: &[u8]) -> Result<(), crate::vm::VmError> {
        Err("no page is missing".into())
    }

    fn install_zero(&self, _gpa: u64, _pages: u64) -> Result<(), crate::vm::VmError> {
        Err("no page is missing".into())
    }

    fn finish(&self) -> Result<(), crate::vm::VmError> {
        Ok(())
    }
}

/// A set of pages as the wire carries it (PostcopyBegin, Stale), checked
/// against the VM's layout: its size, and no page outside guest memory.
pub(super) fn page_set(
    bitmap: &[u8],
    layout: &Arc<PageLayout>,
    what: &str,
) -> Result<DirtyBitmap, MigrateError> {
    let mut set = DirtyBitmap::new(layout);
    if bitmap.len() != set.words().len() * 8 {
        return Err(MigrateError::Protocol(format!(
            "{what} has {} bytes, the VM's page bitmap {}",
            bitmap.len(),
            set.words().len() * 8
        )));
    }
    for (w, b) in set.words_mut().iter_mut().zip(bitmap.chunks_exact(8)) {
        *w = u64::from_le_bytes(b.try_into().expect("8 bytes"));
    }
    let mut outside = set.clone();
    outside.and_not_assign(&DirtyBitmap::full(layout));
    if !outside.is_empty() {
        return Err(MigrateError::Protocol(format!(
            "{what} names pages outside guest memory"
        )));
    }
    Ok(set)
}

impl<VM: DestinationVm> Receiver<'_, VM> {
    /// Stale, during pre-copy: the VM forgets these copies now (only a
    /// destination that accepted post-copy, where it matters, is sent one).
    pub(super) fn stale(
        &mut self,
        s: &wire::Stale<'_>,
        arrival: &mut Arrival,
    ) -> Result<(), MigrateError> {
        if !self.postcopy_accepted {
            return Err(MigrateError::Protocol(
                "Stale, but this destination did not accept post-copy".into(),
            ));
        }
        let set = page_set(s.bitmap, &arrival.layout, "the stale set")?;
        let zeroed = self
            .vm_mut()?
            .discard_stale(&set)
            .map_err(|source| MigrateError::Vm {
                op: VmOp::DiscardStale,
                source,
            })?;
        if zeroed {
            // A zero run for one of them need not write it.
            arrival.written.and_not_assign(&set);
        }
        Ok(())
    }

    /// BetweenRounds -> AwaitState: checks the set against the layout, then
    /// drops its pages and intercepts their first touch (the VM is paused).
    pub(super) fn postcopy_begin(
        &mut self,
        b: &PostcopyBegin<'_>,
        layout: &Arc<PageLayout>,
    ) -> Result<Switch, MigrateError> {
        if !self.postcopy_accepted {
            return Err(MigrateError::Protocol(
                "PostcopyBegin, but this destination did not accept post-copy".into(),
            ));
        }
        let missing = page_set(b.bitmap, layout, "the post-copy set")?;
        let lease = match b.lease_ns {
            0 => None,
            ns => {
                let fence = self.vm_mut()?.fence().ok_or_else(|| {
                    MigrateError::Protocol(
                        "PostcopyBegin asks for a lease, but this VM cannot be fenced".into(),
                    )
                })?;
                Some((Duration::from_nanos(ns), fence))
            }
        };
        let t0 = Instant::now();
        // Nothing to fetch (a leased pre-copy): nothing to intercept either.
        let memory: Arc<dyn PostcopyMemory> = if missing.is_empty() {
            Arc::new(AllPresent)
        } else {
            self.vm_mut()?
                .start_postcopy(&missing)
                .map_err(|source| MigrateError::Vm {
                    op: VmOp::StartPostcopy,
                    source,
                })?
        };
        self.report.postcopy_pages = missing.count();
        tracing::debug!(pages = missing.count(), took = ?t0.elapsed(), "post-copy memory armed");
        Ok(Switch {
            received: SharedBits::new(layout.index_len()),
            received_count: AtomicU64::new(0),
            missing,
            memory,
            faults: FaultLog::default(),
            block: self.opts.fault_block_pages.clamp(1, MAX_FAULT_BLOCK_PAGES),
            lease,
            epoch: AtomicU64::new(0),
            layout: Arc::clone(layout),
            txn_interval: None,
        })
    }

    /// The destination's side of transactions, if the switch plans them:
    /// its dirty log on and its output held. Begun once the state is
    /// restored, while Commit is on its way, so that it stays out of the
    /// pause.
    pub(super) fn begin_txns(
        &mut self,
        switch: Option<&Switch>,
        layout: &Arc<PageLayout>,
    ) -> Result<Option<Txns>, MigrateError> {
        let Some(interval) = switch.and_then(|s| s.txn_interval) else {
            return Ok(None);
        };
        let vm = self
            .vm_mut()?
            .transactions()
            .ok_or_else(|| MigrateError::Protocol("this VM cannot send transactions".into()))?;
        let t0 = Instant::now();
        let t = Txns::begin(vm, interval, layout)?;
        tracing::debug!(took = ?t0.elapsed(), "transactions begun");
        Ok(Some(t))
    }

    /// AwaitCommit -> Postcopy -> Running (with `txns` from
    /// [`Self::begin_txns`]): the fault thread starts, the VM
    /// resumes (if its lease holds), the pages arrive; PostcopyEnd with
    /// every page here ends it, and with a lease the source's final grant.
    pub(super) fn postcopy<R: Read, W: Write + Send>(
        &mut self,
        r: &mut MessageReader<R>,
        w: &SharedWriter<W>,
        switch: Switch,
        txns: Option<Txns>,
        layout: &Arc<PageLayout>,
        relink: Option<Relink<'_, R, W>>,
    ) -> Result<(), MigrateError> {
        let started = Instant::now();
        let stop = AtomicBool::new(false);
        let lease = switch.lease.as_ref().map(|(period, fence)| {
            let anchor = self.ready_at.unwrap_or_else(Instant::now);
            Lease::new(*period, Arc::clone(fence), !self.keep_paused, anchor)
        });
        let result = std::thread::scope(|scope| {
            // Held from before the fault thread starts: a fault taken before
            // the switch (a sampler reading the guest's status page from
            // another process) must not put a PageRequest ahead of Resumed.
            let held = lock(w);
            let faults = (!switch.missing.is_empty())
                .then(|| scope.spawn(|| fault_loop(&switch, layout, w, &stop)));
            let mut watchdog = None;
            let mut sender = None;
            let may_run = lease.as_ref().map_or(Ok(true), Lease::may_start);
            let served = may_run
                .and_then(|run| self.resume(held, run))
                .and_then(|()| {
                    if let Some(l) = &lease {
                        scope.spawn(|| lease::ask(l, w, &stop));
                        watchdog = Some(scope.spawn(|| lease::watch(l, &stop)));
                    }
                    if let Some(t) = &txns {
                        let (lease, epoch, stop) = (lease.as_ref(), &switch.epoch, &stop);
                        sender = Some(scope.spawn(move || txn::run(t, w, lease, epoch, stop)));
                    }
                    self.set_stage(Stage::Postcopy);
                    let ctx = Ctx {
                        lease: lease.as_ref(),
                        txns: txns.as_ref(),
                    };
                    self.receive_to_the_end(r, w, &switch, layout, ctx, relink)
                });
            stop.store(true, Ordering::SeqCst);
            let thread = |h: std::thread::ScopedJoinHandle<'_, Result<(), MigrateError>>, what| {
                h.join().unwrap_or_else(|_| {
                    Err(MigrateError::Protocol(format!(
                        "the {what} thread panicked"
                    )))
                })
            };
            let watched = watchdog.map_or(Ok(()), |h| thread(h, "lease watchdog"));
            let synced = sender.map_or(Ok(()), |h| thread(h, "transaction"));
            let faulted = faults.map_or(Ok(()), |h| thread(h, "fault"));
            served.and(faulted).and(watched).and(synced)
        });
        self.report.postcopy_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.report.fault_wait_ms = switch.faults.total_wait().as_secs_f64() * 1e3;
        self.report.lease_lapses = lease.as_ref().map_or(0, Lease::lapses);
        if let Some(t) = &txns {
            self.report.transactions = t.sent.load(Ordering::Relaxed);
            self.report.transactions_acked = t.last_acked();
            self.report.transaction_bytes = t.bytes.load(Ordering::Relaxed);
            if result.is_ok() {
                t.finish();
            }
        }
        result?;
        self.set_stage(Stage::Running);
        Ok(())
    }

    /// Every page, then the source's final grant, across broken links: a
    /// link lost while the grant is awaited is waited for like any other
    /// (the source, not told we own the VM, comes back and ends again).
    fn receive_to_the_end<R: Read, W: Write>(
        &mut self,
        r: &mut MessageReader<R>,
        w: &SharedWriter<W>,
        switch: &Switch,
        layout: &Arc<PageLayout>,
        ctx: Ctx<'_>,
        relink: Option<Relink<'_, R, W>>,
    ) -> Result<(), MigrateError> {
        let mut finished = false;
        loop {
            self.receive_relinking(r, w, switch, layout, ctx, relink)?;
            if !finished {
                switch.memory.finish().map_err(mem_err)?;
                finished = true;
            }
            match self.done(r, w, switch, ctx) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.await_source(e, r, w, switch, ctx.lease, relink)?;
                    self.set_stage(Stage::Postcopy);
                }
            }
        }
    }

    /// Postcopy across broken links: each time the link fails (not a
    /// peer's error), wait up to the recovery timeout for the source to
    /// reconnect, then go on from the pages held here.
    fn receive_relinking<R: Read, W: Write>(
        &mut self,
        r: &mut MessageReader<R>,
        w: &SharedWriter<W>,
        switch: &Switch,
        layout: &Arc<PageLayout>,
        ctx: Ctx<'_>,
        relink: Option<Relink<'_, R, W>>,
    ) -> Result<(), MigrateError> {
        loop {
            match self.receive_postcopy(r, w, switch, layout, ctx) {
                Ok(()) => return Ok(()),
                Err(e) => self.await_source(e, r, w, switch, ctx.lease, relink)?,
            }
        }
    }

    /// The link failed with `e`: unless it is not the link's fault (or
    /// there is no recovery), wait up to the recovery timeout for the
    /// source to reconnect, and go on over the new link from the pages
    /// held here.
    pub(super) fn await_source<R: Read, W: Write>(
        &mut self,
        e: MigrateError,
        r: &mut MessageReader<R>,
        w: &SharedWriter<W>,
        switch: &Switch,
        lease: Option<&Lease>,
        relink: Option<Relink<'_, R, W>>,
    ) -> Result<(), MigrateError> {
        let timeout = self.opts.recovery_timeout;
        let Some(relink) = relink.filter(|_| e.is_link_failure() && !timeout.is_zero()) else {
            return Err(e);
        };
        // The cause is in the final error if the link never comes back.
        tracing::debug!("link lost after the switch: {e}");
        tracing::warn!(
            "link lost after the switch; waiting up to {} for the source to reconnect",
            units::format_duration(timeout)
        );
        let link = relink(Instant::now() + timeout, self.report.migration_id).ok_or(
            MigrateError::NotRecovered {
                first: Box::new(e),
                timeout,
            },
        )?;
        resume_link(r, w, link, switch, lease)?;
        self.report.reconnects += 1;
        tracing::info!("the source reconnected: the migration goes on");
        Ok(())
    }

    /// Every page is here: PostcopyDone; with a lease, wait for the
    /// source's final grant (the VM is ours only then).
    fn done<R: Read, W: Write>(
        &mut self,
        r: &mut MessageReader<R>,
        w: &SharedWriter<W>,
        switch: &Switch,
        ctx: Ctx<'_>,
    ) -> Result<(), MigrateError> {
        let lease = ctx.lease;
        let (faults, p50, p99) = switch.faults.summary();
        self.report.faults = faults;
        self.report.fault_p50_ms = p50 as f64 / 1e6;
        self.report.fault_p99_ms = p99 as f64 / 1e6;
        let sent = {
            let mut w = lock(w);
            w.postcopy_done(&PostcopyDone {
                pages: switch.received_count.load(Ordering::Relaxed),
                faults,
                fault_p50_ns: p50,
                fault_p99_ns: p99,
            })
            .and_then(|()| w.flush())
        };
        let Some(lease) = lease else {
            // Without a lease a lost acknowledgement changes nothing here.
            return Ok(());
        };
        const DURING: &str = "waiting for the source to give the VM up";
        self.set_stage(Stage::AwaitRelease);
        sent.map_err(|e| MigrateError::from_wire(e, DURING, self.opts.stall_timeout))?;
        while !lease.owned() {
            match r
                .next(DURING)
                .map_err(|e| MigrateError::from_wire(e, DURING, self.opts.stall_timeout))?
            {
                Message::LeaseGrant(g) => lease.granted(&g)?,
                Message::TxnAck(a) => ctx.acked(a.seq)?,
                m => return Err(MigrateError::unexpected(m, "LeaseGrant after PostcopyDone")),
            }
        }
        self.report.owned = true;
        // The source keeps its copy until it hears this; if it does not,
        // it comes back and is told again (`confirm_owned`).
        let told = {
            let mut w = lock(w);
            w.owned(self.report.migration_id).and_then(|()| w.flush())
        };
        if let Err(e) = told {
            tracing::debug!("could not confirm owning the VM: {e}");
        }
        Ok(())
    }

    /// Postcopy: pages of the set, each once, until PostcopyEnd.
    fn receive_postcopy<R: Read, W: Write>(
        &mut self,
        r: &mut MessageReader<R>,
        w: &SharedWriter<W>,
        switch: &Switch,
        layout: &Arc<PageLayout>,
        ctx: Ctx<'_>,
    ) -> Result<(), MigrateError> {
        let lease = ctx.lease;
        let wire =
            |e| MigrateError::from_wire(e, "receiving post-copy pages", self.opts.stall_timeout);
        loop {
            match r.next("receiving post-copy pages").map_err(wire)? {
                Message::Pages { gpa, data } => {
                    let n = data.len() as u64 / PAGE_SIZE;
                    let first = check_new(switch, layout, gpa, n)?;
                    switch.memory.install(gpa, data).map_err(mem_err)?;
                    switch.mark(first, n);
                    self.report.pages += n;
                }
                Message::ZeroPages(runs) => {
                    for (gpa, n) in runs {
                        let first = check_new(switch, layout, gpa, n)?;
                        switch.memory.install_zero(gpa, n).map_err(mem_err)?;
                        switch.mark(first, n);
                        self.report.zero_pages += n;
                    }
                }
                Message::PostcopyEnd(e) => return end(switch, &e),
                // After a reconnection: the source did not hear Resumed.
                Message::Commit { migration_id } if migration_id == self.report.migration_id => {
                    self.resumed_again(&mut lock(w))?
                }
                Message::TxnAck(a) => ctx.acked(a.seq)?,
                Message::LeaseGrant(g) => match lease {
                    Some(l) => l.granted(&g)?,
                    None => {
                        return Err(MigrateError::Protocol(
                            "LeaseGrant in a post-copy without a lease".into(),
                        ));
                    }
                },
                m => return Err(MigrateError::unexpected(m, "post-copy pages")),
            }
        }
    }
}

/// What the session thread consults besides the pages: the lease and the
/// transactions, if any.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    lease: Option<&'a Lease>,
    txns: Option<&'a Txns>,
}

impl Ctx<'_> {
    fn acked(&self, seq: u64) -> Result<(), MigrateError> {
        match self.txns {
            Some(t) => t.acked(seq),
            None => Err(MigrateError::Protocol(
                "TxnAck in a post-copy without transactions".into(),
            )),
        }
    }
}

impl Switch {
    /// The pages of the set held here, as bitmap words.
    pub(super) fn received_words(&self) -> Vec<u64> {
        self.received
            .0
            .iter()
            .map(|w| w.load(Ordering::Acquire))
            .collect()
    }

    /// Addresses of the pages vCPUs wait for now.
    pub(super) fn waiting_gpas(&self) -> Vec<u64> {
        let w = self
            .faults
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        w.keys().filter_map(|&i| self.layout.gpa_of(i)).collect()
    }

    fn mark(&self, first: u64, n: u64) {
        for i in first..first + n {
            self.received.set(i);
        }
        self.received_count.fetch_add(n, Ordering::Relaxed);
        self.faults.installed(first, n);
    }
}

pub(super) fn mem_err(source: crate::vm::VmError) -> MigrateError {
    MigrateError::Vm {
        op: VmOp::PostcopyMemory,
        source,
    }
}

/// Pages `[gpa, gpa + n pages)` must lie in guest memory, in the set, and
/// not have arrived yet: anything else is refused before it is installed.
fn check_new(switch: &Switch, layout: &PageLayout, gpa: u64, n: u64) -> Result<u64, MigrateError> {
    let first = n
        .checked_mul(PAGE_SIZE)
        .and_then(|len| layout.check_range(gpa, len))
        .ok_or_else(|| {
            MigrateError::Protocol(format!(
                "post-copy pages at {gpa:#x} ({n} pages) lie outside guest memory"
            ))
        })?;
    for i in first..first + n {
        if !switch.missing.get(i) {
            return Err(MigrateError::Protocol(format!(
                "page {:#x} is not in the post-copy set",
                gpa + (i - first) * PAGE_SIZE
            )));
        }
        if switch.received.get(i) {
            return Err(MigrateError::Protocol(format!(
                "page {:#x} arrived twice in post-copy",
                gpa + (i - first) * PAGE_SIZE
            )));
        }
    }
    Ok(first)
}

/// PostcopyEnd: every page of the set must be here, as the source counted.
fn end(switch: &Switch, e: &PostcopyEnd) -> Result<(), MigrateError> {
    let want = switch.missing.count();
    let got = switch.received_count.load(Ordering::Relaxed);
    if got != want || e.pages + e.zero_pages != want {
        return Err(MigrateError::Protocol(format!(
            "PostcopyEnd after {got} of the {want} pages of the set (the source says it sent {})",
            e.pages + e.zero_pages
        )));
    }
    Ok(())
}
