//! A post-copy that outlives its source process (docs/SAFETY.md, "Source
//! process killed"). Guest memory lives in a shared file the VMM keeps; a
//! [`Journal`] keeps beside it what a restarted process needs: the
//! migration's id and post-copy set, written before Commit, and the state
//! of the latest transaction applied. [`resume_postcopy`] takes such a
//! post-copy up again: it reconnects as after a cut link (Reattach) and
//! serves the rest, and if the destination never comes back it resumes
//! the VM here from the latest transaction, as the process it replaces
//! would have.

use std::time::{Duration, Instant};

use vmstate::VmState;

use super::engine::Engine;
use super::options::{MigrationFailure, SourceOptions};
use super::relink::{Back, Dial, FIRST_BACKOFF, MAX_BACKOFF, NewLink, Redial, dial_again};
use super::{conclude, failed_early, lease_margin, ms};
use crate::bitmap::{DirtyBitmap, PageLayout};
use crate::error::MigrateError;
use crate::events::{self, MigrationEvent};
use crate::progress::Phase;
use crate::report::{MigrationReport, Outcome, PostcopyReport, VmLocation};
use crate::vm::{SourceVm, VmError};

/// Where a source keeps what a restarted process needs to go on serving
/// a post-copy. Written on the migration's thread; only
/// [`switched`](Self::switched) may fail the migration (before Commit,
/// so it rolls back). A later write that fails must leave a record that
/// cannot resume the VM from a wrong state (the implementer says so in
/// its log), never stop the migration.
pub trait Journal: Send {
    /// The switch, before Commit's first byte: from here on the VM may
    /// run on the destination and guest memory here must outlive us.
    fn switched(&mut self, rec: &Switched<'_>) -> Result<(), VmError>;

    /// Transaction `seq` is about to be written into guest memory: until
    /// [`applied`](Self::applied), memory matches no recorded state.
    fn applying(&mut self, seq: u64);

    /// Transaction `seq` is in guest memory; `state` is the VM's as of it.
    fn applied(&mut self, seq: u64, state: &VmState);

    /// The final grant is about to go out: from here the VM may run on the
    /// destination for good, so a restarted process must never resume it
    /// here (it may still serve the destination and hear it owns the VM).
    fn given_up(&mut self);

    /// Nothing is left to recover: the post-copy completed (memory
    /// released), or the VM is about to run here again (a rollback before
    /// Commit, a take-back), after which the record would be stale.
    fn ended(&mut self);
}

/// What the switch records.
pub struct Switched<'a> {
    pub migration_id: u64,
    /// The pages the destination fetches (a page bitmap, `DirtyBitmap`
    /// words over the VM's regions).
    pub set: &'a [u64],
    /// The destination sends transactions back.
    pub transactions: bool,
    /// The state at the switch (transaction 0), when transactions are on.
    pub state: Option<&'a VmState>,
}

/// A post-copy to take up again, as a journal recorded it.
#[derive(Debug)]
pub struct PostcopyResume {
    pub migration_id: u64,
    /// The post-copy set ([`Switched::set`]).
    pub set: Vec<u64>,
    pub transactions: bool,
    /// The latest transaction applied in full (0: the switch).
    pub synced: u64,
    /// The VM's state as of `synced`; `None` if unknown (no transactions,
    /// or the process died while writing one into memory): the VM then
    /// goes on only on the destination.
    pub state: Option<Box<VmState>>,
}

impl<V: SourceVm> Engine<'_, V> {
    /// Records the switch, if a journal is kept (before Commit).
    pub(super) fn journal_switch(&mut self) -> Result<(), MigrateError> {
        let (Some(j), Some(set)) = (self.journal.as_mut(), self.postcopy.as_ref()) else {
            return Ok(());
        };
        j.switched(&Switched {
            migration_id: self.migration_id,
            set: set.words(),
            transactions: self.txns_planned,
            state: self.synced_state.as_deref(),
        })
        .map_err(|e| MigrateError::Journal(e.to_string()))
    }
}

/// Takes up the post-copy `rec` of a source process that died: `vm` holds
/// its memory (the shared file) and is retired (it runs nowhere here).
/// `to` and `opts` are the first process's (the same secret, TLS identity,
/// lease, recovery timeout and transaction interval; `opts.migration_id`
/// is replaced by the record's). Reconnects within the recovery timeout
/// and serves what the destination lacks, as after a cut link; if no
/// connection succeeds, waits until every lease the dead process can
/// have granted has run out, then resumes the VM here from `rec.state`.
pub fn resume_postcopy<V: SourceVm>(
    vm: &mut V,
    to: &str,
    rec: PostcopyResume,
    mut opts: SourceOptions,
) -> Result<MigrationReport, Box<MigrationFailure>> {
    // Every grant of the dead process was sent before this instant.
    let started = Instant::now();
    opts.migration_id = rec.migration_id;
    let config = vm.config();
    let mut report = MigrationReport::new(opts.strategy.name(), config.memory_bytes);
    report.vm_location = VmLocation::Unknown;
    opts.progress.set_memory(config.memory_bytes);
    events::enter(&opts.progress, opts.observer.as_ref(), Phase::Postcopy);
    let layout = match PageLayout::new(&config.regions) {
        Ok(l) => l,
        Err(e) => return Err(failed_early(e.into(), report, &opts, started)),
    };
    let mut set = DirtyBitmap::new(&layout);
    if set.words().len() != rec.set.len() {
        let e = MigrateError::Journal(format!(
            "the recorded post-copy set covers {} pages, the VM has {}",
            rec.set.len() * 64,
            layout.pages()
        ));
        return Err(failed_early(e, report, &opts, started));
    }
    set.words_mut().copy_from_slice(&rec.set);
    let redial = Redial::new(to, &opts);
    let dial = Dial {
        id: rec.migration_id,
        stall: opts.stall_timeout,
        link_bandwidth: opts.link_bandwidth,
        progress: opts.progress.clone(),
        cancel: opts.cancel.clone(),
    };
    let link = match first_link(&redial, &dial, &layout, started + opts.recovery_timeout) {
        Ok(Back::Link(link)) => link,
        Ok(Back::Owned) => return already_owned(vm, report, &mut opts, started),
        Err(e) => return Err(never_reconnected(vm, e, rec, report, &mut opts, started)),
    };
    tracing::info!("reconnected to the destination: post-copy goes on from the restarted source");
    let NewLink {
        w,
        incoming,
        stream,
        reader,
        held,
    } = link;
    let session = wire::Session {
        version: opts.offer.max_version,
        capabilities: opts.offer.capabilities,
        rtt: Duration::ZERO,
    };
    let mut engine = Engine::new(vm, layout, (w, incoming, session), report, started, &opts);
    engine.report.vm_location = VmLocation::Destination;
    engine.redial = Some(redial);
    engine.journal = opts.journal.take();
    engine.links.push((stream, reader));
    engine.granted_at = (!opts.lease.is_zero()).then_some(started);
    engine.txn_offered = rec.transactions;
    engine.txns_planned = rec.transactions;
    engine.synced = rec.synced;
    engine.synced_state = rec.state;
    engine.resumed = Some(held);
    engine.postcopy = Some(set);
    engine.report.postcopy = Some(PostcopyReport {
        trigger: "restarted source".to_string(),
        pages_to_fetch: rec.set.iter().map(|w| u64::from(w.count_ones())).sum(),
        ..PostcopyReport::default()
    });
    let result = engine.postcopy();
    conclude(engine.finish(), result, &opts)
}

/// Reconnection attempts until `deadline`, backing off as after a cut link.
fn first_link(
    rd: &Redial,
    d: &Dial,
    layout: &std::sync::Arc<PageLayout>,
    deadline: Instant,
) -> Result<Back<NewLink>, MigrateError> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let e = match dial_again(rd, d, layout) {
            Ok(link) => return Ok(link),
            Err(e @ (MigrateError::PeerAborted { .. } | MigrateError::Protocol(_))) => {
                return Err(e);
            }
            Err(e) => e,
        };
        tracing::debug!("reconnection failed: {e}");
        if Instant::now() + backoff >= deadline {
            return Err(MigrateError::NotRecovered {
                first: Box::new(e),
                timeout: rd.recovery,
            });
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The dead process had given the VM up and the destination heard it: the
/// migration completed; only the memory here is left to free.
fn already_owned<V: SourceVm>(
    vm: &mut V,
    mut report: MigrationReport,
    opts: &mut SourceOptions,
    started: Instant,
) -> Result<MigrationReport, Box<MigrationFailure>> {
    tracing::info!("the destination owns the VM already: the migration had completed");
    if let Some(j) = opts.journal.as_mut() {
        j.ended();
    }
    vm.release();
    report.vm_location = VmLocation::Destination;
    report.outcome = Outcome::Completed;
    report.total_time_ms = ms(started.elapsed());
    events::enter(&opts.progress, opts.observer.as_ref(), Phase::Done);
    conclude(report, Ok(()), opts)
}

/// No link came back: once the dead process's last lease has certainly
/// run out, the VM runs here from the recorded state, if there is one.
fn never_reconnected<V: SourceVm>(
    vm: &mut V,
    error: MigrateError,
    rec: PostcopyResume,
    mut report: MigrationReport,
    opts: &mut SourceOptions,
    started: Instant,
) -> Box<MigrationFailure> {
    let over = started + opts.lease + lease_margin(opts.lease);
    let now = Instant::now();
    if !opts.lease.is_zero() && now < over {
        std::thread::sleep(over - now);
    }
    let seq = rec.synced;
    let resumable = rec.state.is_some() && !opts.lease.is_zero();
    if resumable && let Some(j) = opts.journal.as_mut() {
        // Before the VM runs here: its memory moves on from the record.
        j.ended();
    }
    let taken = match rec.state {
        Some(state) if resumable => match vm.take_back(*state) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("could not resume the VM on the source: {e}");
                false
            }
        },
        _ => false,
    };
    if taken {
        tracing::warn!(
            "post-copy could not go on ({error}); resumed on the source from transaction {seq}"
        );
        report.vm_location = VmLocation::Source;
        report.outcome = Outcome::Recovered(format!(
            "post-copy could not go on ({error}); the destination's lease ran out, so it is fenced: resumed on the source from transaction {seq}"
        ));
    } else {
        report.vm_location = VmLocation::Nowhere;
        report.outcome = Outcome::Interrupted(format!(
            "post-copy could not go on ({error}) and the VM cannot resume here (no synchronized state, or no lease): it runs nowhere, its memory kept here"
        ));
    }
    report.total_time_ms = ms(started.elapsed());
    events::enter(&opts.progress, opts.observer.as_ref(), Phase::RolledBack);
    events::notify(opts.observer.as_ref(), MigrationEvent::Finished(&report));
    Box::new(MigrationFailure { error, report })
}
