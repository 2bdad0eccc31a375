//! The destination's state machine, after the handshake: one step per
//! [`Stage`], each reading the message it expects and refusing any other.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use vmstate::{VmConfig, VmState};
use wire::{Abort, Accept, Message, MessageReader, MessageWriter, Resumed, Start};

use super::postcopy::Switch;
use super::relink::Relink;
use super::{DestOptions, ReceiveReport};
use crate::bitmap::{DirtyBitmap, PAGE_SIZE, PageLayout};
use crate::error::{MigrateError, VmOp};
use crate::vm::{DestinationVm, VmFactory};

/// Where the destination is in a migration.
///
/// ```text
///   AwaitStart
///       | Start within limits: create the VM (paused, zeroed), send Accept
///       v
///   BetweenRounds <-------------------------------+
///       | RoundBegin(n), n above every            |
///       | earlier round                           | RoundEnd(n)
///       v                                         |
///   InRound { n, last: false } -------------------+
///       ^    | Pages, ZeroPages: written into guest memory;
///       +----+ Stale(set), if we accepted post-copy: forget those
///              copies (also BetweenRounds)
///
///   BetweenRounds ------------------------------------+
///       | RoundBegin(n, FINAL)                         | PostcopyBegin(set), if we
///       v                                              | accepted post-copy: drop the
///   InRound { n, last: true }  (Pages, ZeroPages       | pages of the set, intercept
///       |                       as above)              | their first touch
///       | RoundEnd(n)                                  |
///       v                                              |
///   AwaitState <---------------------------------------+
///       | State of the machine Start announced: restore_state, send Ready
///       v
///   AwaitCommit
///       | Commit with Start's migration id: resume the VM, send Resumed
///       | (after a leased PostcopyBegin: a link failure waits for Reattach
///       |  as in Postcopy below, then Commit on the new link)
///       v
///   Running  (no post-copy)        Postcopy  (after PostcopyBegin)
///                                      ^  | Pages, ZeroPages: pages of the set
///                                      +--+ not received yet, installed; faults
///                                         | on missing pages send PageRequests
///                                      ^  | Commit again (after a Reattach):
///                                      +--+ send Resumed again
///                                      ^  | LeaseGrant(n): lease extended; the
///                                      +--+ watchdog fences the vCPUs when it
///                                         | lapses, a later grant lifts that
///                                         | PostcopyEnd, every page of the set
///                                         v received: stop intercepting,
///                                      AwaitRelease   send PostcopyDone
///                                      (Postcopy: a link failure waits up to the recovery
///                                       timeout at the gate for Reattach with this id,
///                                       answers Reattached, and goes on)
///                                         | LeaseGrant(FINAL), Owned sent (no lease: at once;
///                                         | a link failure here waits for Reattach as in Postcopy)
///                                         v
///                                      Running        the VM is ours for good
///
/// Any other message, an Abort, the connection closing, a stall or a
/// failure in any stage before Running: send Abort (unless the source
/// already knows) and discard the VM. Before Commit it never ran here; in
/// Postcopy it ran but cannot go on without its pages (the source keeps
/// its copy as it was at the switch; docs/PROTOCOL.md, "Post-copy failures").
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    AwaitStart,
    BetweenRounds,
    InRound { round: u32, last: bool },
    AwaitState,
    AwaitCommit,
    Postcopy,
    AwaitRelease,
    Running,
}

impl Stage {
    /// Where the stream is, for errors about a message that has no place there.
    pub(super) fn describe(self) -> &'static str {
        match self {
            Stage::AwaitStart => "expecting Start",
            Stage::BetweenRounds => "between rounds",
            Stage::InRound { .. } => "inside a round",
            Stage::AwaitState => "after the final round, expecting State",
            Stage::AwaitCommit => "expecting Commit",
            Stage::Postcopy => "in post-copy",
            Stage::AwaitRelease => "after PostcopyDone, expecting the final LeaseGrant",
            Stage::Running => "after Commit",
        }
    }
}

/// One incoming migration on the destination.
pub(super) struct Receiver<'o, VM> {
    pub(super) opts: &'o DestOptions,
    /// The VM, from Start on.
    pub(super) vm: Option<VM>,
    pub(super) report: ReceiveReport,
    pub(super) stage: Stage,
    /// The VM was paused on the source: do not resume it here.
    pub(super) keep_paused: bool,
    /// We told the source we can take the VM in post-copy.
    pub(super) postcopy_accepted: bool,
    /// We told the source we can send transactions in post-copy.
    pub(super) txn_accepted: bool,
    /// When Ready left: a post-copy lease's first period counts from here.
    pub(super) ready_at: Option<Instant>,
}

/// The writer, shared in post-copy with the thread that requests pages.
pub(super) type SharedWriter<W> = Mutex<MessageWriter<W>>;

pub(super) fn lock<W: Write>(w: &SharedWriter<W>) -> MutexGuard<'_, MessageWriter<W>> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// What Start announced, and what the rounds wrote so far.
pub(super) struct Arrival {
    pub(super) config: VmConfig,
    pub(super) migration_id: u64,
    pub(super) layout: Arc<PageLayout>,
    /// Pages that hold data from this migration (the others are still zero).
    pub(super) written: DirtyBitmap,
    pub(super) last_round: u32,
    /// After PostcopyBegin: what is missing and how it arrives.
    pub(super) postcopy: Option<Switch>,
}

pub(super) fn peer_aborted(a: Abort) -> MigrateError {
    MigrateError::PeerAborted {
        code: a.code,
        message: a.message,
    }
}

impl<'o, VM: DestinationVm> Receiver<'o, VM> {
    pub(super) fn new(opts: &'o DestOptions, report: ReceiveReport) -> Self {
        Receiver {
            opts,
            vm: None,
            report,
            stage: Stage::AwaitStart,
            keep_paused: false,
            postcopy_accepted: false,
            txn_accepted: false,
            ready_at: None,
        }
    }

    pub(super) fn wire(
        &self,
        during: &'static str,
    ) -> impl FnOnce(wire::WireError) -> MigrateError + use<VM> {
        let t = self.opts.stall_timeout;
        move |e| MigrateError::from_wire(e, during, t)
    }

    /// Everything after the handshake, stage by stage.
    pub(super) fn session<R: Read, W: Write + Send, F: VmFactory<Vm = VM>>(
        &mut self,
        r: &mut MessageReader<R>,
        w: &SharedWriter<W>,
        factory: &mut F,
        relink: Option<Relink<'_, R, W>>,
    ) -> Result<(), MigrateError> {
        let start = self.await_start(r)?;
        let mut arrival = self.accept(*start, w, factory)?;
        let state = self.receive_rounds(r, w, &mut arrival)?;
        self.restore_state(&arrival.config, state, w)?;
        let txns = self.begin_txns(arrival.postcopy.as_ref(), &arrival.layout)?;
        loop {
            let Err(e) = self.await_commit(r, arrival.migration_id) else {
                break;
            };
            // A leased switch: the source may come back and Commit again.
            match arrival.postcopy.as_ref().filter(|s| s.lease.is_some()) {
                Some(switch) => self.await_source(e, r, w, switch, None, relink)?,
                None => return Err(e),
            }
        }
        match arrival.postcopy.take() {
            None => self.resume(lock(w), true),
            Some(switch) => self.postcopy(r, w, switch, txns, &arrival.layout, relink),
        }
    }

    /// AwaitStart: the source's Start.
    fn await_start<R: Read>(
        &mut self,
        r: &mut MessageReader<R>,
    ) -> Result<Box<Start>, MigrateError> {
        match r
            .next("waiting for Start")
            .map_err(self.wire("waiting for Start"))?
        {
            Message::Start(s) => Ok(s),
            m => Err(MigrateError::unexpected(m, "Start")),
        }
    }

    /// Checks the VM against our limits before allocating anything, then
    /// creates it and accepts.
    fn accept<W: Write, F: VmFactory<Vm = VM>>(
        &mut self,
        start: Start,
        w: &SharedWriter<W>,
        factory: &mut F,
    ) -> Result<Arrival, MigrateError> {
        if u64::from(start.page_size) != PAGE_SIZE {
            return Err(MigrateError::InvalidConfig(format!(
                "page size {} is not supported (only {PAGE_SIZE})",
                start.page_size
            )));
        }
        if start.flags & !Start::KNOWN_FLAGS != 0 {
            return Err(MigrateError::Protocol(format!(
                "Start has unknown flags {:#x}",
                start.flags
            )));
        }
        self.keep_paused = start.flags & Start::PAUSED != 0;
        let config = start.config;
        config
            .validate()
            .map_err(|e| MigrateError::InvalidConfig(e.to_string()))?;
        if config.memory_bytes > self.opts.max_memory {
            return Err(MigrateError::MemoryLimit {
                announced: config.memory_bytes,
                max: self.opts.max_memory,
            });
        }
        let layout = PageLayout::new(&config.regions)?;
        self.report.memory_bytes = config.memory_bytes;
        self.report.migration_id = start.migration_id;
        let t0 = Instant::now();
        let vm = factory.create(&config).map_err(|source| MigrateError::Vm {
            op: VmOp::Create,
            source,
        })?;
        tracing::debug!(took = ?t0.elapsed(), "incoming VM created");
        self.postcopy_accepted = self.opts.postcopy && vm.supports_postcopy();
        self.txn_accepted = self.postcopy_accepted && vm.transactions().is_some();
        self.vm = Some(vm);
        let mut flags = 0;
        if self.postcopy_accepted {
            flags |= Accept::POSTCOPY;
        }
        if self.txn_accepted {
            flags |= Accept::TRANSACTIONS;
        }
        let mut w = lock(w);
        w.accept(&Accept { flags })
            .and_then(|()| w.flush())
            .map_err(self.wire("accepting the VM"))?;
        self.stage = Stage::BetweenRounds;
        Ok(Arrival {
            config,
            migration_id: start.migration_id,
            written: DirtyBitmap::new(&layout),
            layout,
            last_round: 0,
            postcopy: None,
        })
    }

    /// AwaitState -> AwaitCommit: the state must describe the machine Start
    /// announced; everything that can fail happens here, before Ready.
    fn restore_state<W: Write>(
        &mut self,
        config: &VmConfig,
        state: Box<VmState>,
        w: &SharedWriter<W>,
    ) -> Result<(), MigrateError> {
        if state.config.memory_bytes != config.memory_bytes
            || state.config.regions != config.regions
            || state.vcpus.len() != config.vcpus as usize
        {
            return Err(MigrateError::Protocol(format!(
                "the VM state describes a different machine ({} vCPUs, {} bytes) than Start announced ({} vCPUs, {} bytes)",
                state.vcpus.len(),
                state.config.memory_bytes,
                config.vcpus,
                config.memory_bytes
            )));
        }
        self.vm_mut()?
            .restore_state(*state)
            .map_err(|source| MigrateError::Vm {
                op: VmOp::RestoreState,
                source,
            })?;
        let mut w = lock(w);
        self.ready_at = Some(Instant::now());
        w.ready()
            .and_then(|()| w.flush())
            .map_err(self.wire("sending Ready"))?;
        self.stage = Stage::AwaitCommit;
        Ok(())
    }

    /// AwaitCommit: the VM runs here only once Commit has been read.
    fn await_commit<R: Read>(
        &mut self,
        r: &mut MessageReader<R>,
        migration_id: u64,
    ) -> Result<(), MigrateError> {
        match r
            .next("waiting for Commit")
            .map_err(self.wire("waiting for Commit"))?
        {
            Message::Commit { migration_id: id } if id == migration_id => Ok(()),
            Message::Commit { migration_id: id } => Err(MigrateError::Protocol(format!(
                "Commit for migration {id:#x}, expected {migration_id:#x}"
            ))),
            m => Err(MigrateError::unexpected(m, "Commit")),
        }
    }

    /// Commit read -> Running: start the vCPUs (unless the VM was paused on
    /// the source, or `start` is false: its post-copy lease lapsed already
    /// and the next grant starts it) and acknowledge.
    /// `w` is held from before the vCPUs start until Resumed is sent: in
    /// post-copy a fault must not put a PageRequest on the wire ahead of it.
    pub(super) fn resume<W: Write>(
        &mut self,
        mut w: MutexGuard<'_, MessageWriter<W>>,
        start: bool,
    ) -> Result<(), MigrateError> {
        let t_commit = Instant::now();
        let keep_paused = self.keep_paused;
        if !keep_paused && start {
            self.vm_mut()?.resume().map_err(|source| MigrateError::Vm {
                op: VmOp::Resume,
                source,
            })?;
        }
        self.stage = Stage::Running;
        self.opts
            .committed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.report.running = !keep_paused;
        let resume = t_commit.elapsed();
        self.report.commit_to_resume_ms = resume.as_secs_f64() * 1000.0;
        // The VM is committed and running: a lost acknowledgement changes nothing here.
        let _ = w
            .resumed(&Resumed {
                commit_to_resume_ns: resume.as_nanos() as u64,
                resumed_unix_ns: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
            })
            .and_then(|()| w.flush());
        Ok(())
    }

    /// Commit again on a new link, the VM already resumed: Resumed again.
    pub(super) fn resumed_again<W: Write>(
        &self,
        w: &mut MessageWriter<W>,
    ) -> Result<(), MigrateError> {
        w.resumed(&Resumed {
            commit_to_resume_ns: (self.report.commit_to_resume_ms * 1e6) as u64,
            resumed_unix_ns: 0,
        })
        .and_then(|()| w.flush())
        .map_err(self.wire("answering Commit again"))
    }

    pub(super) fn set_stage(&mut self, stage: Stage) {
        self.stage = stage;
    }

    pub(super) fn vm_mut(&mut self) -> Result<&mut VM, MigrateError> {
        self.vm.as_mut().ok_or_else(|| no_vm(self.stage))
    }

    pub(super) fn vm_memory(&self) -> Result<&vm_memory::GuestMemoryMmap, MigrateError> {
        self.vm
            .as_ref()
            .map(|vm| vm.memory())
            .ok_or_else(|| no_vm(self.stage))
    }
}

/// A step that needs the VM ran before Start created it: a bug in this
/// state machine, reported rather than panicking.
fn no_vm(stage: Stage) -> MigrateError {
    MigrateError::Protocol(format!("no VM yet ({})", stage.describe()))
}
