//! The source's state machine up to Commit: Setup (Start, Accept, dirty
//! logging on), Iterative rounds while the strategy wants them,
//! StopAndCopy, StateTransfer until the destination is Ready.

use std::io::BufWriter;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wire::{Capabilities, Drain, MAX_PAGES_PER_RECORD, MessageWriter, Session, Start, WireError};

use super::incoming::{FromDest, Incoming};
use super::meter::{Meter, min_bandwidth};
use super::options::SourceOptions;
use super::round::RoundKind;
use crate::bitmap::{DirtyBitmap, PAGE_SIZE, PageLayout};
use crate::convergence::{LimitReached, Limits, OnTimeout};
use crate::error::{MigrateError, VmOp};
use crate::events::{self, Observer};
use crate::history::PageHistory;
use crate::progress::{CancelToken, Phase, PostcopyRefused, PostcopySwitch, Progress};
use crate::report::MigrationReport;
use crate::strategy::{AutoConvergeParams, Decision, RoundPlan, Strategy, StrategyContext};
use crate::vm::{SourceVm, VmError};
use units::Bandwidth;

/// Pre-copy rounds after which the engine switches over whatever the
/// strategy says (a guard against a strategy that never stops).
pub const MAX_ROUNDS: u32 = 1000;

pub(super) type Writer = MessageWriter<BufWriter<Meter>>;

/// How pre-copy ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Switchover {
    /// Pause, send everything pending, then the state.
    StopAndCopy,
    /// Pause, send the state and the pending set; the pages follow after
    /// the VM runs on the destination. Why, for the report.
    Postcopy(&'static str),
}

impl Switchover {
    fn of(d: Decision, why: &'static str) -> Switchover {
        match d {
            Decision::Postcopy => Switchover::Postcopy(why),
            _ => Switchover::StopAndCopy,
        }
    }
}

/// One migration on the source, from the handshake on.
pub(super) struct Engine<'a, V: SourceVm> {
    pub(super) vm: &'a mut V,
    pub(super) layout: Arc<PageLayout>,
    pub(super) w: Writer,
    pub(super) incoming: Incoming,
    pub(super) history: PageHistory,
    /// Pages whose latest content on the destination is non-zero data.
    pub(super) dest_nonzero: DirtyBitmap,
    pub(super) report: MigrationReport,
    pub(super) started: Instant,
    /// Pages read from guest memory, one record's worth.
    pub(super) buf: Vec<u8>,
    /// Zero runs not yet written, (gpa, pages).
    pub(super) zero_runs: Vec<(u64, u64)>,
    /// Dirty logging is on (stopped on rollback).
    pub(super) logging: bool,
    /// Post-copy completed: the VM's memory is freed once the report's
    /// times are taken (`finish`).
    pub(super) release: bool,
    /// The vCPU throttle in force (fraction of time; 0 = none), released
    /// when the VM pauses for the switchover and on rollback.
    pub(super) throttle: f64,
    /// The throttle `--on-timeout auto-converge` has reached, percent (0 =
    /// not started).
    pub(super) converge_pct: u32,
    /// The VM ran when the migration began (else it stays paused on rollback).
    pub(super) was_running: bool,
    pub(super) paused_at: Option<Instant>,
    pub(super) migration_id: u64,
    pub(super) progress: Arc<Progress>,
    pub(super) cancel: CancelToken,
    pub(super) stall: Duration,
    /// The live rounds' cap: the smaller of max-bandwidth and the link.
    pub(super) max_bandwidth: Option<Bandwidth>,
    pub(super) link_bandwidth: Option<Bandwidth>,
    pub(super) max_downtime: Duration,
    /// Bounds on pre-copy in force: the operator's, else the strategy's.
    pub(super) limits: Limits,
    pub(super) on_timeout: OnTimeout,
    pub(super) observer: Option<Observer>,
    /// How the strategy switches over when pre-copy is ended for it.
    pub(super) forced: Decision,
    /// The session negotiated post-copy (version 2, both sides).
    pub(super) postcopy_offered: bool,
    /// The session negotiated Drain (version 2, both sides).
    pub(super) drain: bool,
    /// Each round's dirtied pages go to the destination as a Stale: the
    /// destination accepted post-copy and understands it, and this
    /// migration is expected to switch to post-copy.
    pub(super) stale: bool,
    /// The operator's request to switch to post-copy now.
    pub(super) switch: PostcopySwitch,
    /// After a switch to post-copy: the pages the destination must fetch.
    pub(super) postcopy: Option<DirtyBitmap>,
    /// The post-copy lease period (zero: none).
    pub(super) lease: Duration,
    /// Pre-copy ended as a switch to post-copy with nothing left to fetch,
    /// so that Commit goes out under the lease (`commit.rs`, "leased").
    pub(super) leased: bool,
    /// When the last lease went out (Commit, then each grant).
    pub(super) granted_at: Option<Instant>,
    /// The final grant went out: the VM may never run here again, even if
    /// the destination's Owned never comes.
    pub(super) final_sent: bool,
    /// How to reconnect in post-copy (none: `migrate_stream`, no address).
    pub(super) redial: Option<super::relink::Redial>,
    /// Links opened by reconnections, and bytes sent on links before `w`'s.
    pub(super) links: super::relink::Links,
    pub(super) bytes_before: u64,
    /// The destination can send transactions; how often to ask for them;
    /// whether TxnPlan went out.
    pub(super) txn_offered: bool,
    pub(super) sync_interval: Duration,
    pub(super) txns_planned: bool,
    /// The last transaction applied (0: the switch), and the state to
    /// resume from; after a reconnection the next may repeat a number.
    pub(super) synced: u64,
    pub(super) synced_state: Option<Box<vmstate::VmState>>,
    pub(super) txn_resend: bool,
    /// Transactions applied, for the report.
    pub(super) txns_applied: u64,
    /// Keeps what a restarted source needs (`journal.rs`), if asked to.
    pub(super) journal: Option<Box<dyn super::journal::Journal>>,
    /// A restarted source, or one that reconnected in the commit window:
    /// the pages the destination said it holds then, before serving starts.
    pub(super) resumed: Option<DirtyBitmap>,
}

impl<'a, V: SourceVm> Engine<'a, V> {
    pub(super) fn new(
        vm: &'a mut V,
        layout: Arc<PageLayout>,
        (w, incoming, session): (Writer, Incoming, Session),
        report: MigrationReport,
        started: Instant,
        opts: &SourceOptions,
    ) -> Self {
        Engine {
            vm,
            history: PageHistory::new(&layout),
            dest_nonzero: DirtyBitmap::new(&layout),
            layout,
            w,
            incoming,
            report,
            started,
            buf: vec![0; MAX_PAGES_PER_RECORD * PAGE_SIZE as usize],
            zero_runs: Vec::new(),
            logging: false,
            release: false,
            throttle: 0.0,
            converge_pct: 0,
            was_running: true,
            paused_at: None,
            migration_id: opts.migration_id,
            progress: Arc::clone(&opts.progress),
            cancel: opts.cancel.clone(),
            stall: opts.stall_timeout,
            max_bandwidth: min_bandwidth(opts.max_bandwidth, opts.link_bandwidth),
            link_bandwidth: opts.link_bandwidth,
            max_downtime: opts.max_downtime,
            limits: opts.limits.or(opts.strategy.limits()),
            on_timeout: opts.on_timeout,
            observer: opts.observer.clone(),
            forced: opts.strategy.switchover(),
            postcopy_offered: session.capabilities.contains(Capabilities::POSTCOPY),
            drain: session.capabilities.contains(Capabilities::DRAIN),
            stale: session.capabilities.contains(Capabilities::STALE),
            switch: opts.postcopy_switch.clone(),
            postcopy: None,
            lease: opts.lease,
            leased: false,
            granted_at: None,
            final_sent: false,
            redial: None,
            links: Vec::new(),
            bytes_before: 0,
            txn_offered: false,
            sync_interval: opts.sync_interval,
            txns_planned: false,
            synced: 0,
            synced_state: None,
            txn_resend: false,
            txns_applied: 0,
            journal: None,
            resumed: None,
        }
    }
}

impl<V: SourceVm> Engine<'_, V> {
    pub(super) fn vm_err(op: VmOp) -> impl FnOnce(VmError) -> MigrateError {
        move |source| MigrateError::Vm { op, source }
    }

    pub(super) fn wire_err(
        &self,
        during: &'static str,
    ) -> impl FnOnce(WireError) -> MigrateError + use<V> {
        let stall = self.stall;
        move |e| MigrateError::from_wire(e, during, stall)
    }

    /// Throttles the vCPUs to `fraction` of the time out of the guest (0 =
    /// full speed), if the VM can.
    pub(super) fn set_throttle(&mut self, fraction: f64) -> Result<(), MigrateError> {
        let applied = self
            .vm
            .throttle(fraction)
            .map_err(Self::vm_err(VmOp::Throttle))?;
        self.throttle = if applied { fraction } else { 0.0 };
        Ok(())
    }

    /// Enters `phase`: live progress and the observer.
    pub(super) fn enter(&self, phase: Phase) {
        events::enter(&self.progress, self.observer.as_ref(), phase);
    }

    /// Bytes written to the connection so far.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes_before + self.w.get_ref().get_ref().bytes()
    }

    /// Everything before Commit. On error, the destination's own
    /// explanation (an Abort just before it closed) wins over a bare I/O error.
    pub(super) fn precopy(&mut self, strategy: &mut dyn Strategy) -> Result<(), MigrateError> {
        let r = self.precopy_inner(strategy);
        r.map_err(|e| self.incoming.explain(e))
    }

    fn precopy_inner(&mut self, strategy: &mut dyn Strategy) -> Result<(), MigrateError> {
        self.setup()?;
        if !strategy.precopy_rounds() {
            // Post-copy at once: every page is pending, no dirty log is
            // needed, and the hint is taken with the VM paused.
            let all = DirtyBitmap::full(&self.layout);
            let hint = Some(DirtyBitmap::new(&self.layout));
            self.switch_to_postcopy(1, all, hint, "strategy")?;
            return self.transfer_state();
        }
        let mut pending = self.start_dirty_log()?;
        let mut hint = {
            let mut h = DirtyBitmap::new(&self.layout);
            self.vm.nonzero_hint(&mut h).then_some(h)
        };
        self.enter(Phase::Iterative);
        let (round, switchover) = self.iterate(strategy, &mut pending, &mut hint)?;
        if matches!(switchover, Switchover::Postcopy(_)) {
            self.stale_before_pause(&mut pending)?;
        }
        self.drain_stream()?;
        match switchover {
            Switchover::StopAndCopy => self.stop_and_copy(round, pending, hint)?,
            Switchover::Postcopy(why) => self.switch_to_postcopy(round, pending, hint, why)?,
        }
        self.transfer_state()
    }

    /// Just before a switch to post-copy: what was dirtied since the last
    /// round joins the pending set and goes to the destination as Stale,
    /// which the drain then waits for, so the pause drops only what the
    /// guest dirties in the last moments (docs/PROTOCOL.md, "Stale").
    fn stale_before_pause(&mut self, pending: &mut DirtyBitmap) -> Result<(), MigrateError> {
        if !self.stale {
            return Ok(());
        }
        let mut fresh = DirtyBitmap::new(&self.layout);
        self.vm
            .harvest_dirty(&mut fresh)
            .map_err(Self::vm_err(VmOp::HarvestDirty))?;
        pending.or_assign(&fresh);
        self.w
            .stale(fresh.words())
            .map_err(self.wire_err("sending Stale"))
    }

    /// Waits, the VM still running, until the destination has applied
    /// everything sent so far: what the socket buffers hold would otherwise
    /// be applied after the pause, as downtime (docs/PROTOCOL.md, "Drain").
    fn drain_stream(&mut self) -> Result<(), MigrateError> {
        if !self.drain {
            return Ok(());
        }
        const SEQ: u64 = 1;
        self.w
            .drain(&Drain { seq: SEQ })
            .and_then(|()| self.w.flush())
            .map_err(self.wire_err("sending Drain"))?;
        match self
            .incoming
            .wait("waiting for the destination to apply the stream", true)?
        {
            FromDest::Drained(SEQ) => Ok(()),
            m => Err(self
                .incoming
                .unexpected(m, "instead of Drained for the switchover")),
        }
    }

    /// Setup: the destination checks the config against its limits.
    fn setup(&mut self) -> Result<(), MigrateError> {
        let config = self.vm.config();
        self.was_running = self.vm.is_running();
        self.w
            .start(&Start {
                migration_id: self.migration_id,
                page_size: PAGE_SIZE as u32,
                flags: if self.was_running { 0 } else { Start::PAUSED },
                config,
            })
            .and_then(|()| self.w.flush())
            .map_err(self.wire_err("sending Start"))?;
        match self
            .incoming
            .wait("waiting for the destination to accept the VM", true)?
        {
            FromDest::Accept(a) => {
                let can = self.postcopy_offered && a.postcopy();
                self.txn_offered = can && a.transactions();
                self.switch.set_available(can);
                let needed = matches!(self.forced, Decision::Postcopy)
                    || self.on_timeout == OnTimeout::Postcopy;
                self.stale &= can && needed;
                if needed && !can {
                    return Err(PostcopyRefused.into());
                }
                Ok(())
            }
            FromDest::Abort(a) => Err(MigrateError::Refused {
                code: a.code,
                message: a.message,
            }),
            m => Err(self.incoming.unexpected(m, "instead of Accept")),
        }
    }

    /// Turns dirty logging on; returns the first round's pending pages (all).
    fn start_dirty_log(&mut self) -> Result<DirtyBitmap, MigrateError> {
        let t0 = std::time::Instant::now();
        self.vm
            .start_dirty_log()
            .map_err(Self::vm_err(VmOp::StartDirtyLog))?;
        let t1 = t0.elapsed();
        self.logging = true;
        // Every page is pending in the first round anyway: drop what the log
        // reports now, so an implementation that starts with every page
        // marked dirty (KVM_DIRTY_LOG_INITIALLY_SET) does not make round 2
        // resend all memory. Writes from here on are tracked.
        let mut initial = DirtyBitmap::new(&self.layout);
        self.vm
            .harvest_dirty(&mut initial)
            .map_err(Self::vm_err(VmOp::HarvestDirty))?;
        tracing::debug!(start = ?t1, harvest = ?(t0.elapsed() - t1), "dirty logging on");
        Ok(DirtyBitmap::full(&self.layout))
    }

    /// Iterative rounds, as long as the strategy wants them; returns the
    /// number the stop-and-copy round gets and how pre-copy ends. The first
    /// round takes the hint.
    fn iterate(
        &mut self,
        strategy: &mut dyn Strategy,
        pending: &mut DirtyBitmap,
        hint: &mut Option<DirtyBitmap>,
    ) -> Result<(u32, Switchover), MigrateError> {
        let mut round = 1u32;
        loop {
            self.incoming.poll()?;
            if self.switch_requested() {
                return Ok((round, Switchover::Postcopy("operator")));
            }
            let pending_pages = pending.count();
            let measured;
            let decision = {
                let ctx = StrategyContext {
                    round,
                    pending,
                    pending_pages,
                    history: &self.history,
                    rounds: &self.report.per_round,
                    memory_bytes: self.layout.bytes(),
                    bytes_sent: self.bytes(),
                    elapsed: self.started.elapsed(),
                    max_bandwidth: self.max_bandwidth,
                    max_downtime: self.max_downtime,
                };
                measured = ctx.measured_bandwidth_bps();
                strategy.decide(&ctx)
            };
            self.progress
                .set_remaining(pending_pages * PAGE_SIZE, measured.unwrap_or(0.0));
            match decision {
                Decision::StopAndCopy => return Ok((round, Switchover::StopAndCopy)),
                Decision::Postcopy => return Ok((round, Switchover::Postcopy("strategy"))),
                Decision::Round(_) if round > MAX_ROUNDS => {
                    return Ok((round, Switchover::of(self.forced.clone(), "round guard")));
                }
                Decision::Round(mut plan) => {
                    // The strategy's criterion is not met: a bound may end pre-copy.
                    if let Some(limit) = self.limit_reached(round) {
                        match self.converge_step(limit) {
                            Some(t) => plan.throttle = Some(t.max(plan.throttle.unwrap_or(0.0))),
                            None => return Ok((round, self.on_limit(limit)?)),
                        }
                    }
                    self.progress.set_round(round);
                    self.round(round, pending, &plan, hint.take(), RoundKind::Live)?;
                    round += 1;
                }
            }
        }
    }

    /// With `--on-timeout auto-converge`, past a limit: the throttle for the
    /// next round (QEMU's steps), or `None` when it is at its maximum
    /// already (or the action is another).
    fn converge_step(&mut self, limit: LimitReached) -> Option<f64> {
        if self.on_timeout != OnTimeout::AutoConverge {
            return None;
        }
        let p = AutoConvergeParams::default();
        let next = match self.converge_pct {
            0 => p.initial_pct,
            pct if pct >= p.max_pct => return None,
            pct => (pct + p.increment_pct).min(p.max_pct),
        };
        self.report.limit_reached = Some(limit);
        self.converge_pct = next;
        tracing::debug!(
            throttle_pct = next,
            "pre-copy past its limit: throttling the vCPUs"
        );
        Some(f64::from(next) / 100.0)
    }

    /// Whether a time limit cuts a running round short (not while
    /// auto-converge throttles past it: its rounds must finish to measure).
    pub(super) fn limit_cuts_rounds(&self) -> bool {
        self.on_timeout != OnTimeout::AutoConverge
    }

    /// The bound in force that pre-copy has reached before `round`, if any.
    fn limit_reached(&self, round: u32) -> Option<LimitReached> {
        self.limits.reached(round, self.started.elapsed())
    }

    /// The operator asked to switch to post-copy, and the destination can.
    pub(super) fn switch_requested(&self) -> bool {
        self.postcopy_offered && self.switch.available() == Some(true) && self.switch.is_requested()
    }

    /// Pre-copy reached `limit`: record it, then go on to the switchover
    /// (`Ok`, which one) or roll back (`Err`), as the operator asked.
    pub(super) fn on_limit(&mut self, limit: LimitReached) -> Result<Switchover, MigrateError> {
        self.report.limit_reached = Some(limit);
        let why = match limit {
            LimitReached::MaxRounds => "round limit",
            LimitReached::Timeout => "time limit",
        };
        match self.on_timeout {
            OnTimeout::Force | OnTimeout::AutoConverge => {
                Ok(Switchover::of(self.forced.clone(), why))
            }
            OnTimeout::Postcopy => Ok(Switchover::Postcopy(why)),
            OnTimeout::Abort => Err(MigrateError::NotConverged {
                limit,
                detail: match limit {
                    LimitReached::MaxRounds => {
                        format!("{} rounds", self.limits.max_rounds.unwrap_or_default())
                    }
                    LimitReached::Timeout => {
                        units::format_duration(self.limits.max_time.unwrap_or_default())
                    }
                },
            }),
        }
    }

    /// Stop-and-copy: pause, collect the last dirty pages, send everything pending.
    fn stop_and_copy(
        &mut self,
        round: u32,
        mut pending: DirtyBitmap,
        mut hint: Option<DirtyBitmap>,
    ) -> Result<(), MigrateError> {
        self.enter(Phase::StopAndCopy);
        self.progress.set_round(round);
        if self.cancel.is_cancelled() {
            return Err(MigrateError::Cancelled);
        }
        self.pause_for_switchover(&mut pending)?;
        if hint.is_some() {
            // Paused: a fresh hint is exact.
            let mut h = DirtyBitmap::new(&self.layout);
            hint = self.vm.nonzero_hint(&mut h).then_some(h);
        }
        // A destination that takes leases and transactions: Commit goes
        // out under the lease (`commit.rs`, "leased").
        let leased = self.txn_offered && !self.lease.is_zero() && !self.sync_interval.is_zero();
        let kind = if leased {
            RoundKind::Leased
        } else {
            RoundKind::Final
        };
        self.round(round, &mut pending, &RoundPlan::default(), hint, kind)?;
        if leased {
            self.lease_commit()?;
        }
        Ok(())
    }

    /// Pauses the VM for the switchover (stop-and-copy or post-copy):
    /// releases any throttle (whatever runs next, here after a rollback or
    /// on the destination, runs at full speed), and adds the last dirty
    /// pages to `pending`, returning them alone (`None` without a dirty
    /// log). Dirty logging stays on until the switchover is over (Resumed,
    /// rollback, or the end): turning it off takes 1-5 ms here, and a
    /// paused guest writes nothing.
    pub(super) fn pause_for_switchover(
        &mut self,
        pending: &mut DirtyBitmap,
    ) -> Result<Option<DirtyBitmap>, MigrateError> {
        self.vm.pause().map_err(Self::vm_err(VmOp::Pause))?;
        self.paused_at = Some(Instant::now());
        if self.throttle > 0.0 {
            self.set_throttle(0.0)?;
        }
        if self.logging {
            let mut last = DirtyBitmap::new(&self.layout);
            self.vm
                .harvest_dirty(&mut last)
                .map_err(Self::vm_err(VmOp::HarvestDirty))?;
            pending.or_assign(&last);
            return Ok(Some(last));
        }
        Ok(None)
    }

    /// State transfer, then wait for the destination to have loaded it.
    fn transfer_state(&mut self) -> Result<(), MigrateError> {
        self.enter(Phase::StateTransfer);
        let state = self
            .vm
            .save_state()
            .map_err(Self::vm_err(VmOp::SaveState))?;
        self.w
            .state(&state)
            .and_then(|()| self.w.flush())
            .map_err(self.wire_err("sending the VM state"))?;
        if self.txns_planned {
            // Transaction 0: where the VM resumes here if none arrives
            // (paused, it is the state just sent).
            self.synced_state = Some(Box::new(state));
        }
        match self
            .incoming
            .wait("waiting for the destination to load the VM state", true)?
        {
            FromDest::Ready => {}
            m => return Err(self.incoming.unexpected(m, "instead of Ready")),
        }
        self.journal_switch()?;
        // Last chance to cancel: after this point the VM moves.
        if self.cancel.is_cancelled() {
            return Err(MigrateError::Cancelled);
        }
        Ok(())
    }
}
