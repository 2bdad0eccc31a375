//! The destination side: sources authenticate at a gate
//! ([`wire::gate`]: concurrent handshakes with a deadline, bounded,
//! refusals logged); each authenticated connection is a session of its own
//! that checks the VM against local limits, writes pages into a fresh VM,
//! loads its state, and runs it only once Commit has arrived. Any failure
//! before Commit discards everything received. `session` holds the state
//! machine; its `Stage` enum draws it.

mod faults;
mod lease;
mod postcopy;
mod relink;
mod rounds;
mod session;
#[cfg(test)]
mod tests;
mod txn;

use std::io::{BufReader, BufWriter};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tls::Conn;
use wire::gate::{Admitted, DestHandshake, Gate, GateLimits};
use wire::{MessageReader, MessageWriter, Offer, Secret, Session, WireError};

use crate::error::MigrateError;
use crate::source::DEFAULT_STALL_TIMEOUT;
use crate::vm::{DestinationVm, VmFactory};
use session::Receiver;

pub use faults::{FAULT_BLOCK_PAGES, MAX_FAULT_BLOCK_PAGES};
pub use relink::confirm_owned;

/// How to receive.
#[derive(Clone, Debug)]
pub struct DestOptions {
    pub secret: Secret,
    /// Largest guest memory accepted, bytes (`--max-memory`).
    pub max_memory: u64,
    /// Abort when the source makes no progress for this long.
    pub stall_timeout: Duration,
    /// Protocol versions and capabilities accepted.
    pub offer: Offer,
    /// What a peer may do before it authenticates (deadline, how many at once).
    pub gate: GateLimits,
    /// [`accept_one`] gives up when no source authenticated within this
    /// long (`--accept-timeout`); `None` waits for ever.
    pub accept_timeout: Option<Duration>,
    /// Take VMs in post-copy when the source asks and the VM can
    /// ([`DestinationVm::supports_postcopy`]).
    pub postcopy: bool,
    /// Pages asked for per fault in post-copy: the aligned block around the
    /// faulting page (1 to [`MAX_FAULT_BLOCK_PAGES`]; docs/MIGRATION.md,
    /// "Block size").
    pub fault_block_pages: u64,
    /// Set once the VM runs here (Commit received): from then on cutting
    /// the connection could only lose it (in post-copy its memory still
    /// comes from the source), so a caller that stops early checks it.
    pub committed: Arc<AtomicBool>,
    /// In post-copy, how long to wait for the source to reconnect after the
    /// link broke (`--recovery-timeout`; zero: give up at once). Needs the
    /// gate ([`receive_with`]).
    pub recovery_timeout: Duration,
    /// Mutual TLS at the gate, before the handshake (`--tls-dir`); `None`:
    /// plain TCP, authenticated by the secret alone.
    pub tls: Option<tls::Credentials>,
}

/// Default time a broken post-copy link has to come back.
pub const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

impl DestOptions {
    pub fn new(secret: Secret, max_memory: u64) -> Self {
        DestOptions {
            secret,
            max_memory,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            offer: Offer::default(),
            gate: GateLimits::default(),
            accept_timeout: None,
            postcopy: true,
            fault_block_pages: FAULT_BLOCK_PAGES,
            committed: Arc::new(AtomicBool::new(false)),
            recovery_timeout: DEFAULT_RECOVERY_TIMEOUT,
            tls: None,
        }
    }
}

/// What the destination saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReceiveReport {
    /// The source's identity for this migration (its Start).
    #[serde(default)]
    pub migration_id: u64,
    pub peer: Option<String>,
    pub memory_bytes: u64,
    pub rounds: u32,
    /// Pages received as data.
    pub pages: u64,
    /// Pages announced zero.
    pub zero_pages: u64,
    pub bytes_received: u64,
    /// Source authenticated to VM resumed.
    pub total_time_ms: f64,
    /// Commit read to vCPUs running.
    pub commit_to_resume_ms: f64,
    /// Whether the VM runs (false: it was paused on the source and stays paused).
    pub running: bool,
    /// Pages the VM ran without, at the switch to post-copy (0: no post-copy).
    #[serde(default)]
    pub postcopy_pages: u64,
    /// VM resumed here -> every page here, ms.
    #[serde(default)]
    pub postcopy_ms: f64,
    /// Touches of missing pages the vCPUs waited on, and how long (p50, p99).
    #[serde(default)]
    pub faults: u64,
    #[serde(default)]
    pub fault_p50_ms: f64,
    #[serde(default)]
    pub fault_p99_ms: f64,
    /// The faults' waits added up: how long vCPUs stood still for pages, ms.
    #[serde(default)]
    pub fault_wait_ms: f64,
    /// Times the post-copy lease lapsed and the VM was fenced (paused).
    #[serde(default)]
    pub lease_lapses: u64,
    /// Times the source reconnected after the post-copy link broke.
    #[serde(default)]
    pub reconnects: u64,
    /// Post-copy transactions sent to the source, the last it acknowledged,
    /// and the bytes they took on the wire.
    #[serde(default)]
    pub transactions: u64,
    #[serde(default)]
    pub transactions_acked: u64,
    #[serde(default)]
    pub transaction_bytes: u64,
    /// The source gave the VM up with its final grant (a leased commit or
    /// post-copy): the source keeps its copy until it hears we own it, and
    /// may come back to ask ([`confirm_owned`]).
    #[serde(default)]
    pub owned: bool,
}

/// A VM that arrived and now runs here (or is paused, if it was paused on
/// the source: `report.running`).
pub struct Received<VM> {
    pub vm: VM,
    pub report: ReceiveReport,
}

/// Listens for sources on `listener`: every connection authenticates at
/// the gate first, and each one that does comes out of [`Gate::next`] as a
/// session of its own for [`receive`] (a host receiving several VMs at
/// once runs each on its own thread).
pub fn listen(listener: TcpListener, opts: &DestOptions) -> Result<Gate<Session>, MigrateError> {
    let handshake = DestHandshake {
        secret: opts.secret.clone(),
        offer: opts.offer.clone(),
    };
    Gate::open(listener, handshake, opts.gate.clone(), opts.tls.clone())
        .map_err(|e| MigrateError::Wire(e.into()))
}

/// Waits for the first source that authenticates on `listener` (refusing
/// every other peer, which cannot disturb it) and receives its VM; the port
/// stays open only for that source to reconnect in post-copy.
pub fn accept_one<F: VmFactory>(
    listener: TcpListener,
    factory: &mut F,
    opts: &DestOptions,
) -> Result<Received<F::Vm>, MigrateError> {
    let gate = listen(listener, opts)?;
    let source = gate.next(opts.accept_timeout);
    let refused = gate.stats().refused;
    match source {
        Some(source) => {
            let received = receive_with(source, Some(&gate), factory, opts)?;
            confirm_owned(gate, opts, &received.report);
            Ok(received)
        }
        None => Err(MigrateError::AcceptTimeout {
            waited: opts.accept_timeout.unwrap_or_default(),
            refused,
        }),
    }
}

/// Receives a VM over a connection that authenticated at the gate. On
/// success the VM runs. A broken post-copy link is not survived (no gate
/// to come back through): [`receive_with`].
pub fn receive<F: VmFactory>(
    source: Admitted<Session>,
    factory: &mut F,
    opts: &DestOptions,
) -> Result<Received<F::Vm>, MigrateError> {
    receive_with(source, None, factory, opts)
}

/// As [`receive`]; in post-copy, a source whose link broke may come back
/// through `gate` within `opts.recovery_timeout` (authenticated there, then
/// naming this migration) and go on. Other authenticated peers that arrive
/// meanwhile are told there is no such migration here and closed.
pub fn receive_with<F: VmFactory>(
    source: Admitted<Session>,
    gate: Option<&Gate<Session>>,
    factory: &mut F,
    opts: &DestOptions,
) -> Result<Received<F::Vm>, MigrateError> {
    let started = Instant::now();
    let io = |e| MigrateError::Wire(WireError::Io(e));
    let stream = source.stream;
    stream.set_nodelay(true).map_err(io)?;
    stream
        .set_read_timeout(Some(opts.stall_timeout))
        .map_err(io)?;
    stream
        .set_write_timeout(Some(opts.stall_timeout))
        .map_err(io)?;
    let mut r = MessageReader::new(BufReader::with_capacity(
        256 * 1024,
        stream.try_clone().map_err(io)?,
    ));
    let current = Mutex::new(stream.try_clone().map_err(io)?);
    let w = Mutex::new(MessageWriter::new(BufWriter::new(stream)));
    let mut rx = Receiver::new(
        opts,
        ReceiveReport {
            peer: Some(source.peer.to_string()),
            ..Default::default()
        },
    );
    // `current`, the link in use: a reconnection first cuts the broken
    // one, or a writer blocked on it (a transaction's pages into a stalled
    // socket) would hold the writer the new link needs.
    let relink = gate.map(|g| {
        let current = &current;
        move |deadline, id| {
            let mut cur = current.lock().unwrap_or_else(|e| e.into_inner());
            let _ = cur.shutdown(std::net::Shutdown::Both);
            let link = relink::relink(g, opts, deadline, id)?;
            *cur = link.2;
            Some((link.0, link.1))
        }
    });
    let result = rx.session(
        &mut r,
        &w,
        factory,
        relink.as_ref().map(|f| f as relink::Relink<'_, _, _>),
    );
    rx.report.bytes_received = r.bytes_read();
    rx.report.total_time_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(()) => {
            let vm = rx.vm.take().expect("a received VM");
            Ok(Received {
                vm,
                report: rx.report,
            })
        }
        Err(e) => {
            if !e.peer_knows() {
                let mut w = session::lock(&w);
                let _ = w.abort(e.abort_code_dest(), &e.to_string());
                let _ = w.flush();
                drain_after_abort(w.get_ref().get_ref());
            }
            if let Some(vm) = rx.vm.take() {
                vm.discard();
            }
            Err(e)
        }
    }
}

/// Lets the source read our Abort: closing a socket with unread bytes
/// queued makes the kernel send a reset, which can destroy the Abort before
/// the source reads it. So stop writing, then read and drop what the source
/// still sends until it closes (bounded by a short deadline).
fn drain_after_abort(stream: &Conn) {
    const LINGER: Duration = Duration::from_secs(1);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut buf = [0u8; 64 * 1024];
    let mut s = stream;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Runs the destination's post-handshake state machine over `stream` with
/// the fake VM, as a fuzz target would: any input must end in a clean error
/// or a resumed VM, and everything created must be discarded on error; a
/// VM resumed and then lost on error must have been in post-copy.
/// Only built with the `fuzzing` feature (it skips authentication).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_session(stream: &[u8], max_memory: u64) -> Result<(), MigrateError> {
    let secret = Secret::from_bytes(&[0u8; 32]).expect("32 bytes");
    let opts = DestOptions::new(secret, max_memory);
    let mut factory = crate::fake::FakeFactory::default();
    let mut r = MessageReader::new(stream);
    let w = Mutex::new(MessageWriter::new(std::io::sink()));
    let mut rx = Receiver::new(&opts, ReceiveReport::default());
    let result = rx.session(&mut r, &w, &mut factory, None);
    if let Some(vm) = rx.vm.take() {
        if result.is_ok() {
            drop(vm);
        } else {
            vm.discard();
        }
    }
    let log = factory.log();
    assert!(!log.resumed_before_restore, "resumed before restore");
    if result.is_err() {
        // Only a post-copy (or a leased commit: a switch with nothing to
        // fetch) runs before it is ours, and may then break.
        let leased = matches!(
            rx.stage,
            session::Stage::Postcopy | session::Stage::AwaitRelease
        );
        assert!(
            log.resumed == 0 || log.switched || leased,
            "resumed a VM that failed to arrive"
        );
        assert_eq!(log.created, log.discarded, "created VM not discarded");
    }
    result
}
