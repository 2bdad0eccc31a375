//! The source side: Setup -> Iterative rounds -> StopAndCopy -> StateTransfer
//! -> Commit -> Done, with rollback (VM resumed here) from every state before Commit.

use std::io::{self, BufReader, BufWriter, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vm_memory::{Bytes, GuestAddress};
use wire::{
    Abort, MAX_PAGES_PER_RECORD, Message, MessageReader, MessageWriter, Offer, Resumed, RoundBegin,
    RoundEnd, Secret, Start, WireError,
};

use crate::bitmap::{DirtyBitmap, PAGE_SIZE, PageLayout};
use crate::error::MigrateError;
use crate::history::PageHistory;
use crate::limiter::TokenBucket;
use crate::report::{
    CancelToken, MigrationReport, Outcome, Phase, Progress, RoundReport, VmLocation,
};
use crate::strategy::{Decision, RoundPlan, Strategy, StrategyContext};
use crate::vm::SourceVm;
use units::Bandwidth;

/// Default time allowed for the TCP connection to be established.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time without progress after which a migration is aborted.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default downtime target given to strategies.
pub const DEFAULT_MAX_DOWNTIME: Duration = Duration::from_millis(300);

/// Pre-copy rounds after which the engine switches over whatever the
/// strategy says (a guard against a strategy that never stops).
pub const MAX_ROUNDS: u32 = 1000;
/// Zero runs buffered before a ZeroPages record is written.
const ZERO_RUN_BATCH: usize = 4096;
/// How often a round that skips re-dirtied pages refreshes its view of them.
const MID_ROUND_HARVEST: Duration = Duration::from_millis(20);
/// Largest write handed to the socket at once, so rate limiting stays smooth.
const WRITE_SLICE: usize = 256 * 1024;

/// How to migrate.
pub struct SourceOptions {
    pub secret: Secret,
    pub strategy: Box<dyn Strategy>,
    /// Cap on the bandwidth used while the guest runs (`None` = unlimited),
    /// QEMU's `max-bandwidth`: the paused switchover uses the whole link.
    pub max_bandwidth: Option<Bandwidth>,
    /// Capacity of an emulated link (`None` = the real one): caps every
    /// round, the paused switchover included, to reproduce slow links on
    /// loopback.
    pub link_bandwidth: Option<Bandwidth>,
    /// Downtime target, given to the strategy.
    pub max_downtime: Duration,
    pub connect_timeout: Duration,
    /// Abort when the destination makes no progress for this long.
    pub stall_timeout: Duration,
    /// Live progress, for another thread to poll.
    pub progress: Arc<Progress>,
    /// Set from another thread to cancel (honoured until Commit is sent).
    pub cancel: CancelToken,
    /// Protocol versions and capabilities offered.
    pub offer: Offer,
}

impl SourceOptions {
    /// Options with the defaults above, unlimited bandwidth, and fresh progress/cancel handles.
    pub fn new(secret: Secret, strategy: Box<dyn Strategy>) -> Self {
        SourceOptions {
            secret,
            strategy,
            max_bandwidth: None,
            link_bandwidth: None,
            max_downtime: DEFAULT_MAX_DOWNTIME,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            progress: Progress::new(),
            cancel: CancelToken::new(),
            offer: Offer::default(),
        }
    }
}

/// A migration that did not complete; `report.vm_location` says where the VM runs.
#[derive(Debug)]
pub struct MigrationFailure {
    pub error: MigrateError,
    pub report: MigrationReport,
}

impl std::fmt::Display for MigrationFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "migration failed: {}", self.error)
    }
}

impl std::error::Error for MigrationFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Connects to `to` ("host:port") and migrates `vm` there.
///
/// Before Commit, any failure leaves the VM running here (resumed if it was
/// paused) and returns `Err`, with `report.vm_location == Source`. After
/// Commit, the VM never runs here again: `Ok` once the destination
/// acknowledged, or `Err` with `Outcome::InDoubt` if the acknowledgement was lost.
pub fn migrate<V: SourceVm>(
    vm: &mut V,
    to: &str,
    opts: SourceOptions,
) -> Result<MigrationReport, Box<MigrationFailure>> {
    let started = Instant::now();
    let memory = vm.config().memory_bytes;
    let fail = |error: MigrateError, opts: &SourceOptions| {
        let mut report = MigrationReport::new(opts.strategy.name(), memory);
        report.outcome = Outcome::Failed(error.to_string());
        report.total_time_ms = ms(started.elapsed());
        opts.progress.set_phase(Phase::RolledBack);
        Box::new(MigrationFailure { error, report })
    };
    opts.progress.set_phase(Phase::Setup);
    match connect(to, opts.connect_timeout) {
        Ok(stream) => migrate_stream_from(vm, stream, opts, started),
        Err(e) => Err(fail(e, &opts)),
    }
}

/// Migrates `vm` over an already connected stream.
pub fn migrate_stream<V: SourceVm>(
    vm: &mut V,
    stream: TcpStream,
    opts: SourceOptions,
) -> Result<MigrationReport, Box<MigrationFailure>> {
    migrate_stream_from(vm, stream, opts, Instant::now())
}

fn connect(to: &str, timeout: Duration) -> Result<TcpStream, MigrateError> {
    let addrs: Vec<_> = to
        .to_socket_addrs()
        .map_err(|source| MigrateError::Resolve {
            addr: to.to_string(),
            source,
        })?
        .collect();
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            MigrateError::ConnectTimeout {
                addr: to.to_string(),
                timeout,
            }
        }
        Some(source) => MigrateError::Connect {
            addr: to.to_string(),
            source,
        },
        None => MigrateError::Resolve {
            addr: to.to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
        },
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The socket writer: paces writes with the token bucket and counts bytes.
struct Meter {
    stream: TcpStream,
    bucket: TokenBucket,
    bytes: u64,
    progress: Arc<Progress>,
}

impl Write for Meter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // At low rates, smaller slices keep each sleep short (cancellation
        // and stall detection stay responsive): at most ~20 ms of data.
        let slice = match self.bucket.rate() {
            Some(r) => ((r.bytes_per_sec() / 50) as usize).clamp(4096, WRITE_SLICE),
            None => WRITE_SLICE,
        };
        let n = buf.len().min(slice);
        self.bucket.consume(n as u64);
        let w = self.stream.write(&buf[..n])?;
        self.bytes += w as u64;
        self.progress.set_sent(self.bytes);
        Ok(w)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// What the reader thread forwards from the destination.
enum FromDest {
    Accept,
    Ready,
    Resumed(Resumed),
    Abort(Abort),
    Other(&'static str),
    Error(WireError),
}

type Writer = MessageWriter<BufWriter<Meter>>;

struct Engine<'a, V: SourceVm> {
    vm: &'a mut V,
    layout: Arc<PageLayout>,
    w: Writer,
    incoming: Receiver<FromDest>,
    history: PageHistory,
    /// Pages whose latest content on the destination is non-zero data.
    dest_nonzero: DirtyBitmap,
    report: MigrationReport,
    started: Instant,
    buf: Vec<u8>,
    zero_runs: Vec<(u64, u64)>,
    logging: bool,
    /// The strategy throttled the vCPUs (undone on rollback).
    throttled: bool,
    /// The VM ran when the migration began (else it stays paused on rollback).
    was_running: bool,
    paused_at: Option<Instant>,
    migration_id: u64,
    progress: Arc<Progress>,
    cancel: CancelToken,
    stall: Duration,
    /// The live rounds' cap: the smaller of max-bandwidth and the link.
    max_bandwidth: Option<Bandwidth>,
    link_bandwidth: Option<Bandwidth>,
    max_downtime: Duration,
}

/// The tighter of two optional caps.
fn min_bandwidth(a: Option<Bandwidth>, b: Option<Bandwidth>) -> Option<Bandwidth> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn migrate_stream_from<V: SourceVm>(
    vm: &mut V,
    stream: TcpStream,
    mut opts: SourceOptions,
    started: Instant,
) -> Result<MigrationReport, Box<MigrationFailure>> {
    let config = vm.config();
    let mut report = MigrationReport::new(opts.strategy.name(), config.memory_bytes);
    report.max_bandwidth_bps = opts.max_bandwidth.map(|b| b.bits_per_sec());
    report.link_bandwidth_bps = opts.link_bandwidth.map(|b| b.bits_per_sec());
    report.max_downtime_ms = ms(opts.max_downtime);
    let progress = Arc::clone(&opts.progress);
    progress.set_memory(config.memory_bytes);
    progress.set_phase(Phase::Setup);

    let fail_early = |error: MigrateError, mut report: MigrationReport| {
        report.outcome = Outcome::Failed(error.to_string());
        report.total_time_ms = ms(started.elapsed());
        progress.set_phase(Phase::RolledBack);
        Box::new(MigrationFailure { error, report })
    };
    let layout = match PageLayout::new(&config.regions) {
        Ok(l) => l,
        Err(e) => return Err(fail_early(e.into(), report)),
    };

    // Handshake on this thread; then a reader thread forwards the
    // destination's messages so Aborts are seen while pages stream out.
    let setup = || -> Result<_, MigrateError> {
        let stall = opts.stall_timeout;
        let io = |e: io::Error| MigrateError::Wire(WireError::Io(e));
        stream.set_nodelay(true).map_err(io)?;
        stream.set_write_timeout(Some(stall)).map_err(io)?;
        stream.set_read_timeout(Some(stall)).map_err(io)?;
        let read_half = stream.try_clone().map_err(io)?;
        let mut r = MessageReader::new(BufReader::new(read_half));
        let meter = Meter {
            stream: stream.try_clone().map_err(io)?,
            bucket: TokenBucket::new(min_bandwidth(opts.max_bandwidth, opts.link_bandwidth)),
            bytes: 0,
            progress: Arc::clone(&progress),
        };
        let mut w = MessageWriter::new(BufWriter::with_capacity(WRITE_SLICE, meter));
        let session = wire::source_handshake(&mut r, &mut w, &opts.secret, &opts.offer)
            .map_err(|e| MigrateError::from_wire(e, "authenticating", stall))?;
        stream.set_read_timeout(None).map_err(io)?;
        Ok((r, w, session))
    };
    let (r, w, _session) = match setup() {
        Ok(x) => x,
        Err(e) => {
            let _ = stream.shutdown(Shutdown::Both);
            return Err(fail_early(e, report));
        }
    };
    let (tx, rx) = mpsc::channel();
    let reader = thread::Builder::new()
        .name("migrate-reader".into())
        .spawn(move || reader_loop(r, tx));
    let reader = match reader {
        Ok(h) => h,
        Err(e) => {
            let _ = stream.shutdown(Shutdown::Both);
            return Err(fail_early(MigrateError::Wire(WireError::Io(e)), report));
        }
    };

    let mut engine = Engine {
        vm,
        history: PageHistory::new(&layout),
        dest_nonzero: DirtyBitmap::new(&layout),
        layout,
        w,
        incoming: rx,
        report,
        started,
        buf: vec![0; MAX_PAGES_PER_RECORD * PAGE_SIZE as usize],
        zero_runs: Vec::new(),
        logging: false,
        throttled: false,
        was_running: true,
        paused_at: None,
        migration_id: u64::from_le_bytes(wire::nonce()[..8].try_into().expect("8 bytes")),
        progress: Arc::clone(&progress),
        cancel: opts.cancel.clone(),
        stall: opts.stall_timeout,
        max_bandwidth: min_bandwidth(opts.max_bandwidth, opts.link_bandwidth),
        link_bandwidth: opts.link_bandwidth,
        max_downtime: opts.max_downtime,
    };
    let result = match engine.precopy(&mut *opts.strategy) {
        Ok(()) => engine.commit(),
        Err(e) => Err(engine.rollback(e)),
    };
    let _ = stream.shutdown(Shutdown::Both);
    let _ = reader.join();
    let mut report = engine.finish();
    match result {
        Ok(()) => Ok(report),
        Err(error) => {
            if report.outcome == Outcome::Completed {
                report.outcome = Outcome::Failed(error.to_string());
            }
            Err(Box::new(MigrationFailure { error, report }))
        }
    }
}

fn reader_loop(mut r: MessageReader<BufReader<TcpStream>>, tx: mpsc::Sender<FromDest>) {
    loop {
        let item = match r.next("migrating") {
            Ok(Message::Accept) => FromDest::Accept,
            Ok(Message::Ready) => FromDest::Ready,
            Ok(Message::Resumed(x)) => FromDest::Resumed(x),
            Ok(Message::Abort(a)) => FromDest::Abort(a),
            Ok(m) => FromDest::Other(m.name()),
            Err(e) => {
                let _ = tx.send(FromDest::Error(e));
                return;
            }
        };
        if tx.send(item).is_err() {
            return;
        }
    }
}

/// Per-round counters.
#[derive(Default)]
struct RoundCounters {
    sent: u64,
    skipped: u64,
    zero: u64,
    zero_announced: u64,
}

impl<V: SourceVm> Engine<'_, V> {
    fn vm_err(op: &'static str) -> impl FnOnce(crate::vm::VmError) -> MigrateError {
        move |source| MigrateError::Vm { op, source }
    }

    fn wire_err(&self, during: &'static str) -> impl FnOnce(WireError) -> MigrateError + use<V> {
        let stall = self.stall;
        move |e| MigrateError::from_wire(e, during, stall)
    }

    /// Checks for cancellation and for anything the destination said.
    fn poll(&mut self) -> Result<(), MigrateError> {
        if self.cancel.is_cancelled() {
            return Err(MigrateError::Cancelled);
        }
        match self.incoming.try_recv() {
            Ok(FromDest::Error(WireError::Closed { .. })) => {
                Err(MigrateError::Wire(WireError::Closed {
                    during: "sending pages",
                }))
            }
            Ok(FromDest::Error(e)) => Err(MigrateError::from_wire(e, "sending pages", self.stall)),
            Ok(m) => Err(self.unexpected(m, "while pages are being sent")),
            Err(TryRecvError::Empty) => Ok(()),
            Err(TryRecvError::Disconnected) => Err(MigrateError::Wire(WireError::Closed {
                during: "sending pages",
            })),
        }
    }

    fn unexpected(&self, m: FromDest, when: &'static str) -> MigrateError {
        match m {
            FromDest::Abort(a) => MigrateError::PeerAborted {
                code: a.code,
                message: a.message,
            },
            FromDest::Error(e) => MigrateError::from_wire(e, when, self.stall),
            FromDest::Accept => MigrateError::Protocol(format!("unexpected Accept {when}")),
            FromDest::Ready => MigrateError::Protocol(format!("unexpected Ready {when}")),
            FromDest::Resumed(_) => MigrateError::Protocol(format!("unexpected Resumed {when}")),
            FromDest::Other(name) => {
                MigrateError::Protocol(format!("unexpected {name} from the destination {when}"))
            }
        }
    }

    /// Waits up to the stall timeout for the destination's next message.
    fn wait(&mut self, during: &'static str, cancellable: bool) -> Result<FromDest, MigrateError> {
        let deadline = Instant::now() + self.stall;
        loop {
            if cancellable && self.cancel.is_cancelled() {
                return Err(MigrateError::Cancelled);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(MigrateError::Stalled {
                    during,
                    timeout: self.stall,
                });
            }
            match self
                .incoming
                .recv_timeout(left.min(Duration::from_millis(50)))
            {
                Ok(FromDest::Error(WireError::Closed { .. })) => {
                    return Err(MigrateError::Wire(WireError::Closed { during }));
                }
                Ok(FromDest::Error(e)) => {
                    return Err(MigrateError::from_wire(e, during, self.stall));
                }
                Ok(m) => return Ok(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(MigrateError::Wire(WireError::Closed { during }));
                }
            }
        }
    }

    /// A write failed: if the destination explained itself (Abort) just
    /// before closing, report that instead of the bare I/O error.
    fn explain(&mut self, e: MigrateError) -> MigrateError {
        if !matches!(
            e,
            MigrateError::ConnectionLost { .. }
                | MigrateError::Wire(
                    WireError::Io(_) | WireError::Encode(_) | WireError::Closed { .. }
                )
        ) {
            return e;
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        while let Ok(m) = self
            .incoming
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if let FromDest::Abort(a) = m {
                return MigrateError::PeerAborted {
                    code: a.code,
                    message: a.message,
                };
            }
        }
        e
    }

    fn bytes(&self) -> u64 {
        self.w.get_ref().get_ref().bytes
    }

    fn precopy(&mut self, strategy: &mut dyn Strategy) -> Result<(), MigrateError> {
        let r = self.precopy_inner(strategy);
        r.map_err(|e| self.explain(e))
    }

    fn precopy_inner(&mut self, strategy: &mut dyn Strategy) -> Result<(), MigrateError> {
        // Setup: the destination checks the config against its limits.
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
        match self.wait("waiting for the destination to accept the VM", true)? {
            FromDest::Accept => {}
            FromDest::Abort(a) => {
                return Err(MigrateError::Refused {
                    code: a.code,
                    message: a.message,
                });
            }
            m => return Err(self.unexpected(m, "instead of Accept")),
        }
        self.vm
            .start_dirty_log()
            .map_err(Self::vm_err("start dirty logging"))?;
        self.logging = true;
        // Every page is pending in the first round anyway: drop what the log
        // reports now, so an implementation that starts with every page
        // marked dirty (KVM_DIRTY_LOG_INITIALLY_SET) does not make round 2
        // resend all memory. Writes from here on are tracked.
        let mut initial = DirtyBitmap::new(&self.layout);
        self.vm
            .harvest_dirty(&mut initial)
            .map_err(Self::vm_err("harvest dirty pages"))?;
        let mut pending = DirtyBitmap::full(&self.layout);
        let mut hint = {
            let mut h = DirtyBitmap::new(&self.layout);
            self.vm.nonzero_hint(&mut h).then_some(h)
        };

        // Iterative rounds, as long as the strategy wants them.
        self.progress.set_phase(Phase::Iterative);
        let mut round = 1u32;
        loop {
            self.poll()?;
            let pending_pages = pending.count();
            let measured;
            let decision = {
                let ctx = StrategyContext {
                    round,
                    pending: &pending,
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
                Decision::StopAndCopy => break,
                Decision::Round(_) if round > MAX_ROUNDS => break,
                Decision::Round(plan) => {
                    self.progress.set_round(round);
                    self.round(round, &mut pending, &plan, hint.take(), false)?;
                    round += 1;
                }
            }
        }

        // Stop-and-copy: pause, collect the last dirty pages, send everything pending.
        self.progress.set_phase(Phase::StopAndCopy);
        self.progress.set_round(round);
        if self.cancel.is_cancelled() {
            return Err(MigrateError::Cancelled);
        }
        self.vm.pause().map_err(Self::vm_err("pause"))?;
        self.paused_at = Some(Instant::now());
        let mut last = DirtyBitmap::new(&self.layout);
        self.vm
            .harvest_dirty(&mut last)
            .map_err(Self::vm_err("harvest dirty pages"))?;
        pending.or_assign(&last);
        self.vm
            .stop_dirty_log()
            .map_err(Self::vm_err("stop dirty logging"))?;
        self.logging = false;
        if hint.is_some() {
            // Paused: a fresh hint is exact.
            let mut h = DirtyBitmap::new(&self.layout);
            hint = self.vm.nonzero_hint(&mut h).then_some(h);
        }
        self.round(round, &mut pending, &RoundPlan::default(), hint, true)?;

        // State transfer, then wait for the destination to have loaded it.
        self.progress.set_phase(Phase::StateTransfer);
        let state = self.vm.save_state().map_err(Self::vm_err("save state"))?;
        self.w
            .state(&state)
            .and_then(|()| self.w.flush())
            .map_err(self.wire_err("sending the VM state"))?;
        match self.wait("waiting for the destination to load the VM state", true)? {
            FromDest::Ready => {}
            m => return Err(self.unexpected(m, "instead of Ready")),
        }
        // Last chance to cancel: after this point the VM moves.
        if self.cancel.is_cancelled() {
            return Err(MigrateError::Cancelled);
        }
        Ok(())
    }

    /// One round: send every pending page (less skipped and held-back ones).
    fn round(
        &mut self,
        round: u32,
        pending: &mut DirtyBitmap,
        plan: &RoundPlan,
        hint: Option<DirtyBitmap>,
        last: bool,
    ) -> Result<(), MigrateError> {
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
        self.w.get_mut().get_mut().bucket.set_rate(rate);
        if let Some(t) = plan.throttle {
            let applied = self
                .vm
                .throttle(t)
                .map_err(Self::vm_err("throttle vCPUs"))?;
            self.throttled |= applied && t > 0.0;
        }
        let t0 = Instant::now();
        let b0 = self.bytes();
        let pending_pages = pending.count();
        let mut held = DirtyBitmap::new(&self.layout);
        let mut dirtied = DirtyBitmap::new(&self.layout);
        let mut c = RoundCounters::default();
        let result = self.round_body(
            round,
            pending,
            plan,
            hint,
            last,
            (t0, b0, pending_pages),
            &mut held,
            &mut dirtied,
            &mut c,
        );
        let duration = t0.elapsed();
        let bytes = self.bytes() - b0;
        let secs = duration.as_secs_f64().max(1e-9);
        let dirtied_pages = dirtied.count();
        let r = RoundReport {
            round,
            stop_and_copy: last,
            interrupted: false,
            pages_pending: pending_pages,
            pages_dirtied: dirtied_pages,
            pages_sent: c.sent,
            pages_skipped: c.skipped,
            zero_pages: c.zero,
            bytes,
            duration_ms: ms(duration),
            rate_limit_bps: rate.map(|b| b.bits_per_sec()),
            transfer_rate_bps: bytes as f64 * 8.0 / secs,
            dirty_rate_bps: (dirtied_pages * PAGE_SIZE) as f64 * 8.0 / secs,
        };
        tracing::debug!(?r, "round done");
        if let Err(e) = result {
            // Keep what the interrupted round did, for the report.
            self.report.per_round.push(RoundReport {
                interrupted: true,
                ..r
            });
            return Err(e);
        }
        self.history.end_round(&dirtied);
        *pending = dirtied;
        pending.or_assign(&held);
        self.progress
            .set_remaining(pending.count() * PAGE_SIZE, r.transfer_rate_bps);
        self.report.per_round.push(r);
        Ok(())
    }

    /// Sends one round's pages; counters and dirty pages are left in the
    /// out-parameters even when it fails half way.
    #[allow(clippy::too_many_arguments)]
    fn round_body(
        &mut self,
        round: u32,
        pending: &DirtyBitmap,
        plan: &RoundPlan,
        hint: Option<DirtyBitmap>,
        last: bool,
        (t0, b0, pending_pages): (Instant, u64, u64),
        held: &mut DirtyBitmap,
        dirtied: &mut DirtyBitmap,
        c: &mut RoundCounters,
    ) -> Result<(), MigrateError> {
        self.w
            .round_begin(&RoundBegin {
                round,
                flags: if last { RoundBegin::FINAL } else { 0 },
                pages: pending_pages,
            })
            .map_err(self.wire_err("sending pages"))?;

        let mut visit = pending.clone();
        if let Some(h) = &plan.hold_back
            && !last
        {
            held.or_assign(pending);
            held.and_assign(h);
            visit.and_not_assign(h);
        }
        let skip = plan.skip_redirtied && !last;
        c.skipped = held.count();
        let mut last_harvest = Instant::now();
        let mut visited = c.skipped;
        for (start, count) in visit.runs() {
            let mut i = start;
            let end = start + count;
            while i < end {
                let n = (end - i).min(MAX_PAGES_PER_RECORD as u64);
                self.poll()?;
                if skip && last_harvest.elapsed() >= MID_ROUND_HARVEST {
                    self.vm
                        .harvest_dirty(dirtied)
                        .map_err(Self::vm_err("harvest dirty pages"))?;
                    last_harvest = Instant::now();
                }
                self.send_chunk(i, n, skip.then_some(&*dirtied), hint.as_ref(), c)?;
                i += n;
                visited += n;
                let secs = t0.elapsed().as_secs_f64();
                if secs > 0.0 {
                    let rate = (self.bytes() - b0) as f64 * 8.0 / secs;
                    self.progress
                        .set_remaining((pending_pages - visited) * PAGE_SIZE, rate);
                }
            }
        }
        self.flush_zero_runs(c)?;
        if !last {
            self.vm
                .harvest_dirty(dirtied)
                .map_err(Self::vm_err("harvest dirty pages"))?;
        }
        self.w
            .round_end(&RoundEnd {
                round,
                pages: c.sent,
                zero_pages: c.zero_announced,
            })
            .and_then(|()| self.w.flush())
            .map_err(self.wire_err("sending pages"))?;

        Ok(())
    }

    /// Sends pages `[first, first + n)` (contiguous, in one region): skips
    /// those in `skip`, reads the rest, sends non-zero pages as data and
    /// zero pages as zero runs where the destination holds data for them.
    fn send_chunk(
        &mut self,
        first: u64,
        n: u64,
        skip: Option<&DirtyBitmap>,
        hint: Option<&DirtyBitmap>,
        c: &mut RoundCounters,
    ) -> Result<(), MigrateError> {
        let base_gpa = self
            .layout
            .gpa_of(first)
            .ok_or_else(|| MigrateError::Protocol(format!("page index {first} is not RAM")))?;
        let mut i = 0u64;
        while i < n {
            let idx = first + i;
            if skip.is_some_and(|s| s.get(idx)) {
                c.skipped += 1;
                i += 1;
                continue;
            }
            if hint.is_some_and(|h| !h.get(idx)) {
                // Never touched by the guest: zero.
                c.zero += 1;
                if self.dest_nonzero.get(idx) {
                    self.push_zero(base_gpa + i * PAGE_SIZE, idx, c)?;
                }
                i += 1;
                continue;
            }
            // A segment of pages to read: up to the next skipped or hinted-zero page.
            let mut j = i + 1;
            while j < n
                && !skip.is_some_and(|s| s.get(first + j))
                && hint.is_none_or(|h| h.get(first + j))
            {
                j += 1;
            }
            let seg_gpa = base_gpa + i * PAGE_SIZE;
            let len = ((j - i) * PAGE_SIZE) as usize;
            self.vm
                .memory()
                .read_slice(&mut self.buf[..len], GuestAddress(seg_gpa))
                .map_err(|e| MigrateError::Memory {
                    gpa: seg_gpa,
                    msg: e.to_string(),
                })?;
            // Emit runs of non-zero pages as Pages records.
            let mut k = 0usize;
            let pages = j - i;
            while (k as u64) < pages {
                let page_idx = first + i + k as u64;
                let page = &self.buf[k * PAGE_SIZE as usize..(k + 1) * PAGE_SIZE as usize];
                if vmstate::is_zero_page(page) {
                    c.zero += 1;
                    if self.dest_nonzero.get(page_idx) {
                        let gpa = seg_gpa + k as u64 * PAGE_SIZE;
                        self.push_zero(gpa, page_idx, c)?;
                    }
                    k += 1;
                    continue;
                }
                let mut e = k + 1;
                while (e as u64) < pages
                    && !vmstate::is_zero_page(
                        &self.buf[e * PAGE_SIZE as usize..(e + 1) * PAGE_SIZE as usize],
                    )
                {
                    e += 1;
                }
                let gpa = seg_gpa + k as u64 * PAGE_SIZE;
                let stall = self.stall;
                self.w
                    .pages(
                        gpa,
                        &self.buf[k * PAGE_SIZE as usize..e * PAGE_SIZE as usize],
                    )
                    .map_err(|e| MigrateError::from_wire(e, "sending pages", stall))?;
                for p in k..e {
                    let idx = first + i + p as u64;
                    if self.history.record_send(idx) {
                        self.report.pages_resent += 1;
                    }
                    self.dest_nonzero.set(idx);
                }
                c.sent += (e - k) as u64;
                k = e;
            }
            i = j;
        }
        Ok(())
    }

    fn push_zero(&mut self, gpa: u64, idx: u64, c: &mut RoundCounters) -> Result<(), MigrateError> {
        self.dest_nonzero.unset(idx);
        c.zero_announced += 1;
        match self.zero_runs.last_mut() {
            Some((g, n)) if *g + *n * PAGE_SIZE == gpa => *n += 1,
            _ => self.zero_runs.push((gpa, 1)),
        }
        if self.zero_runs.len() >= ZERO_RUN_BATCH {
            self.flush_zero_runs(c)?;
        }
        Ok(())
    }

    fn flush_zero_runs(&mut self, _c: &mut RoundCounters) -> Result<(), MigrateError> {
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

    /// Sends Commit; from here on the VM never runs on this host again.
    fn commit(&mut self) -> Result<(), MigrateError> {
        self.progress.set_phase(Phase::Commit);
        // The point of no return is *starting* to write Commit: once any of
        // its bytes may have left, the destination may run the VM.
        self.report.vm_location = VmLocation::Unknown;
        self.vm.retire();
        let t_commit = Instant::now();
        if let Some(p) = self.paused_at {
            self.report.pause_ms = Some(ms(t_commit.duration_since(p)));
        }
        let sent = self
            .w
            .commit(self.migration_id)
            .and_then(|()| self.w.flush());
        if let Err(e) = sent {
            let err = MigrateError::from_wire(e, "sending Commit", self.stall);
            self.report.outcome = Outcome::InDoubt(format!(
                "sending Commit failed ({err}); the VM is retired here and may or may not run on the destination"
            ));
            return Err(err);
        }
        match self.wait("waiting for the destination to resume the VM", false) {
            Ok(FromDest::Resumed(ack)) => {
                let t_ack = Instant::now();
                let round_trip = t_ack.duration_since(t_commit);
                let resume = Duration::from_nanos(ack.commit_to_resume_ns);
                // The network part of the round trip, split evenly between the two directions.
                let one_way = round_trip.saturating_sub(resume) / 2;
                let resumed_at = (t_commit + one_way + resume).min(t_ack);
                if let Some(p) = self.paused_at {
                    self.report.downtime_ms = Some(ms(resumed_at.duration_since(p)));
                }
                self.report.vm_location = VmLocation::Destination;
                self.report.outcome = Outcome::Completed;
                self.progress.set_phase(Phase::Done);
                tracing::debug!(
                    resumed_unix_ns = ack.resumed_unix_ns,
                    now_unix_ns = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64),
                    "destination resumed"
                );
                Ok(())
            }
            Ok(m) => {
                let err = self.unexpected(m, "instead of Resumed");
                self.report.outcome = Outcome::InDoubt(format!(
                    "after Commit: {err}; the VM is retired here and may or may not run on the destination"
                ));
                Err(err)
            }
            Err(err) => {
                self.report.outcome = Outcome::InDoubt(format!(
                    "no acknowledgement after Commit ({err}); the VM is retired here and may or may not run on the destination"
                ));
                Err(err)
            }
        }
    }

    /// Any failure before Commit: the VM runs on here.
    fn rollback(&mut self, err: MigrateError) -> MigrateError {
        self.progress.set_phase(Phase::RolledBack);
        if self.logging {
            let _ = self.vm.stop_dirty_log();
            self.logging = false;
        }
        if self.throttled {
            let _ = self.vm.throttle(0.0);
            self.throttled = false;
        }
        let mut err = err;
        if self.paused_at.is_some()
            && self.was_running
            && let Err(source) = self.vm.resume()
        {
            err = MigrateError::ResumeFailed {
                first: Box::new(err),
                source,
            };
        }
        if let Some(p) = self.paused_at {
            self.report.pause_ms = Some(ms(p.elapsed()));
        }
        if !err.peer_knows() {
            let _ = self.w.abort(err.abort_code(), &err.to_string());
            let _ = self.w.flush();
        }
        self.report.vm_location = VmLocation::Source;
        self.report.outcome = match err {
            MigrateError::Cancelled => Outcome::Cancelled,
            ref e => Outcome::Failed(e.to_string()),
        };
        err
    }

    fn finish(self) -> MigrationReport {
        let mut report = self.report;
        report.total_time_ms = ms(self.started.elapsed());
        report.bytes_sent = self.w.get_ref().get_ref().bytes;
        report.finish_totals();
        report
    }
}
