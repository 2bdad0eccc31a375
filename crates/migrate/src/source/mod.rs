//! The source side: Setup -> Iterative rounds -> StopAndCopy -> StateTransfer
//! -> Commit -> Done, with rollback (VM resumed here) from every state before Commit.
//!
//! [`migrate`] connects and hands over to the engine: `engine` runs the
//! states up to Ready, `round` sends one round of pages, `commit` ends the
//! migration either way; `meter` paces and counts what goes on the socket,
//! `incoming` forwards what the destination says.

mod commit;
mod connect;
mod engine;
mod incoming;
mod journal;
mod lease;
mod meter;
mod options;
mod postcopy;
mod relink;
mod round;
mod txn;

use std::io::{self, BufReader, BufWriter};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tls::Conn;
use wire::{MessageReader, MessageWriter, WireError};

use crate::bitmap::PageLayout;
use crate::error::MigrateError;
use crate::events::{self, MigrationEvent};
use crate::progress::Phase;
use crate::report::{MigrationReport, Outcome};
use crate::vm::SourceVm;
use engine::{Engine, Writer};
use incoming::Incoming;
use meter::{Meter, WRITE_SLICE, min_bandwidth};

pub use engine::MAX_ROUNDS;
pub use journal::{Journal, PostcopyResume, Switched, resume_postcopy};
pub use lease::{DEFAULT_LEASE, lease_margin};

/// Default post-copy transaction interval (`--sync-interval`).
pub const DEFAULT_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
pub use options::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_DOWNTIME, DEFAULT_STALL_TIMEOUT, MigrationFailure,
    SourceOptions,
};

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
    events::enter(&opts.progress, opts.observer.as_ref(), Phase::Setup);
    match connect::connect(to, opts.connect_timeout, opts.tls.as_ref()) {
        Ok(stream) => migrate_stream_from(vm, stream, Some(to), opts, started),
        Err(error) => {
            let report = MigrationReport::new(opts.strategy.name(), vm.config().memory_bytes);
            Err(failed_early(error, report, &opts, started))
        }
    }
}

/// Migrates `vm` over an already connected stream (plain, or TLS already
/// established).
pub fn migrate_stream<V: SourceVm>(
    vm: &mut V,
    stream: impl Into<Conn>,
    opts: SourceOptions,
) -> Result<MigrationReport, Box<MigrationFailure>> {
    events::enter(&opts.progress, opts.observer.as_ref(), Phase::Setup);
    migrate_stream_from(vm, stream.into(), None, opts, Instant::now())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A failure before the engine started: nothing was sent, the VM never paused.
fn failed_early(
    error: MigrateError,
    mut report: MigrationReport,
    opts: &SourceOptions,
    started: Instant,
) -> Box<MigrationFailure> {
    report.outcome = Outcome::Failed(error.to_string());
    report.total_time_ms = ms(started.elapsed());
    events::enter(&opts.progress, opts.observer.as_ref(), Phase::RolledBack);
    events::notify(opts.observer.as_ref(), MigrationEvent::Finished(&report));
    Box::new(MigrationFailure { error, report })
}

fn migrate_stream_from<V: SourceVm>(
    vm: &mut V,
    stream: Conn,
    to: Option<&str>,
    mut opts: SourceOptions,
    started: Instant,
) -> Result<MigrationReport, Box<MigrationFailure>> {
    let config = vm.config();
    let mut report = MigrationReport::new(opts.strategy.name(), config.memory_bytes);
    report.max_bandwidth_bps = opts.max_bandwidth.map(|b| b.bits_per_sec());
    report.link_bandwidth_bps = opts.link_bandwidth.map(|b| b.bits_per_sec());
    report.max_downtime_ms = ms(opts.max_downtime);
    opts.progress.set_memory(config.memory_bytes);
    let layout = match PageLayout::new(&config.regions) {
        Ok(l) => l,
        Err(e) => return Err(failed_early(e.into(), report, &opts, started)),
    };
    let (channel, reader) = match connect_session(&stream, &opts, layout.pages()) {
        Ok(x) => x,
        Err(e) => {
            let _ = stream.shutdown(Shutdown::Both);
            return Err(failed_early(e, report, &opts, started));
        }
    };
    let mut engine = Engine::new(vm, layout, channel, report, started, &opts);
    engine.journal = opts.journal.take();
    engine.redial = to.map(|to| relink::Redial::new(to, &opts));
    let result = match engine.precopy(&mut *opts.strategy) {
        Ok(()) => engine.commit().and_then(|()| engine.postcopy()),
        Err(e) => Err(engine.rollback(e)),
    };
    let _ = stream.shutdown(Shutdown::Both);
    let received = reader.join().unwrap_or(0);
    let mut report = engine.finish();
    report.bytes_received += received;
    conclude(report, result, &opts)
}

/// How a migration ends for its caller: an error never leaves the outcome
/// `completed`; the observer hears the final report.
fn conclude(
    mut report: MigrationReport,
    result: Result<(), MigrateError>,
    opts: &SourceOptions,
) -> Result<MigrationReport, Box<MigrationFailure>> {
    if let Err(error) = &result
        && report.outcome == Outcome::Completed
    {
        report.outcome = Outcome::Failed(error.to_string());
    }
    events::notify(opts.observer.as_ref(), MigrationEvent::Finished(&report));
    match result {
        Ok(()) => Ok(report),
        Err(error) => Err(Box::new(MigrationFailure { error, report })),
    }
}

/// The engine's ends of the connection, and what the handshake agreed.
type Channel = (Writer, Incoming, wire::Session);

/// Handshake on this thread; then a reader thread forwards the
/// destination's messages so Aborts are seen while pages stream out.
fn connect_session(
    stream: &Conn,
    opts: &SourceOptions,
    guest_pages: u64,
) -> Result<(Channel, std::thread::JoinHandle<u64>), MigrateError> {
    let stall = opts.stall_timeout;
    let io = |e: io::Error| MigrateError::Wire(WireError::Io(e));
    stream.set_nodelay(true).map_err(io)?;
    stream.set_write_timeout(Some(stall)).map_err(io)?;
    stream.set_read_timeout(Some(stall)).map_err(io)?;
    let mut r = MessageReader::new(BufReader::new(stream.try_clone().map_err(io)?));
    let meter = Meter::new(
        stream.try_clone().map_err(io)?,
        min_bandwidth(opts.max_bandwidth, opts.link_bandwidth),
        Arc::clone(&opts.progress),
        stall,
    );
    let mut w = MessageWriter::new(BufWriter::with_capacity(WRITE_SLICE, meter));
    let session = wire::source_handshake(&mut r, &mut w, &opts.secret, &opts.offer)
        .map_err(|e| MigrateError::from_wire(e, "authenticating", stall))?;
    stream.set_read_timeout(None).map_err(io)?;
    let (incoming, reader) =
        Incoming::spawn(r, stall, opts.cancel.clone(), guest_pages).map_err(io)?;
    Ok(((w, incoming, session), reader))
}
