//! The destination side: accept one connection, authenticate, check the VM
//! against local limits, write pages into a fresh VM, load its state, and
//! run it only once Commit has arrived. Any failure before Commit discards
//! everything received.

use std::io::{BufReader, BufWriter};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress};
use wire::{AbortCode, Message, MessageReader, MessageWriter, Offer, Resumed, Secret, WireError};

use crate::bitmap::{DirtyBitmap, PAGE_SIZE, PageLayout};
use crate::error::MigrateError;
use crate::source::DEFAULT_STALL_TIMEOUT;
use crate::vm::{DestinationVm, VmFactory};

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
}

impl DestOptions {
    pub fn new(secret: Secret, max_memory: u64) -> Self {
        DestOptions {
            secret,
            max_memory,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            offer: Offer::default(),
        }
    }
}

/// What the destination saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReceiveReport {
    pub peer: Option<String>,
    pub memory_bytes: u64,
    pub rounds: u32,
    /// Pages received as data.
    pub pages: u64,
    /// Pages announced zero.
    pub zero_pages: u64,
    pub bytes_received: u64,
    /// Connection accepted to VM resumed.
    pub total_time_ms: f64,
    /// Commit read to vCPUs running.
    pub commit_to_resume_ms: f64,
    /// Whether the VM runs (false: it was paused on the source and stays paused).
    pub running: bool,
}

/// A VM that arrived and now runs here (or is paused, if it was paused on
/// the source: `report.running`).
pub struct Received<VM> {
    pub vm: VM,
    pub report: ReceiveReport,
}

/// Accepts one connection on `listener` and receives a VM over it.
pub fn accept_one<F: VmFactory>(
    listener: &TcpListener,
    factory: &mut F,
    opts: &DestOptions,
) -> Result<Received<F::Vm>, MigrateError> {
    let (stream, _) = listener
        .accept()
        .map_err(|e| MigrateError::Wire(WireError::Io(e)))?;
    receive(stream, factory, opts)
}

/// Receives a VM over an accepted connection. On success the VM runs.
pub fn receive<F: VmFactory>(
    stream: TcpStream,
    factory: &mut F,
    opts: &DestOptions,
) -> Result<Received<F::Vm>, MigrateError> {
    let started = Instant::now();
    let io = |e| MigrateError::Wire(WireError::Io(e));
    let peer: Option<SocketAddr> = stream.peer_addr().ok();
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
    let mut w = MessageWriter::new(BufWriter::new(stream));
    let mut rx = Receiver {
        opts,
        vm: None,
        report: ReceiveReport {
            peer: peer.map(|p| p.to_string()),
            ..Default::default()
        },
        keep_paused: false,
    };
    let result = rx.run(&mut r, &mut w, factory);
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
                let _ = w.abort(e.abort_code_dest(), &e.to_string());
                let _ = w.flush();
            }
            if let Some(vm) = rx.vm.take() {
                vm.discard();
            }
            Err(e)
        }
    }
}

struct Receiver<'o, VM> {
    opts: &'o DestOptions,
    vm: Option<VM>,
    report: ReceiveReport,
    /// The VM was paused on the source: do not resume it here.
    keep_paused: bool,
}

/// Where the stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Between rounds.
    Idle,
    InRound {
        round: u32,
        last: bool,
    },
    /// After the final round: expecting State.
    AwaitState,
}

impl<VM: DestinationVm> Receiver<'_, VM> {
    fn wire(&self, during: &'static str) -> impl FnOnce(WireError) -> MigrateError + use<VM> {
        let t = self.opts.stall_timeout;
        move |e| MigrateError::from_wire(e, during, t)
    }

    fn run<R: std::io::Read, W: std::io::Write, F: VmFactory<Vm = VM>>(
        &mut self,
        r: &mut MessageReader<R>,
        w: &mut MessageWriter<W>,
        factory: &mut F,
    ) -> Result<(), MigrateError> {
        wire::dest_handshake(r, w, &self.opts.secret, &self.opts.offer)
            .map_err(self.wire("authenticating the source"))?;
        self.session(r, w, factory)
    }

    /// Everything after the handshake.
    fn session<R: std::io::Read, W: std::io::Write, F: VmFactory<Vm = VM>>(
        &mut self,
        r: &mut MessageReader<R>,
        w: &mut MessageWriter<W>,
        factory: &mut F,
    ) -> Result<(), MigrateError> {
        // Start: check the VM against our limits before allocating anything.
        let start = match r
            .next("waiting for Start")
            .map_err(self.wire("waiting for Start"))?
        {
            Message::Start(s) => s,
            Message::Abort(a) => {
                return Err(MigrateError::PeerAborted {
                    code: a.code,
                    message: a.message,
                });
            }
            m => {
                return Err(MigrateError::Protocol(format!(
                    "expected Start, got {}",
                    m.name()
                )));
            }
        };
        if u64::from(start.page_size) != PAGE_SIZE {
            return Err(MigrateError::InvalidConfig(format!(
                "page size {} is not supported (only {PAGE_SIZE})",
                start.page_size
            )));
        }
        if start.flags & !wire::Start::KNOWN_FLAGS != 0 {
            return Err(MigrateError::Protocol(format!(
                "Start has unknown flags {:#x}",
                start.flags
            )));
        }
        self.keep_paused = start.flags & wire::Start::PAUSED != 0;
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
        let layout: Arc<PageLayout> = PageLayout::new(&config.regions)?;
        self.report.memory_bytes = config.memory_bytes;
        let vm = factory.create(&config).map_err(|source| MigrateError::Vm {
            op: "create",
            source,
        })?;
        self.vm = Some(vm);
        w.accept()
            .and_then(|()| w.flush())
            .map_err(self.wire("accepting the VM"))?;

        // Rounds of pages, then State.
        let zero_page = vec![0u8; PAGE_SIZE as usize];
        let mut written = DirtyBitmap::new(&layout);
        let mut stage = Stage::Idle;
        let mut last_round = 0u32;
        let state = loop {
            let msg = r
                .next("receiving pages")
                .map_err(self.wire("receiving pages"))?;
            let vm = self.vm.as_mut().expect("created");
            match (msg, stage) {
                (Message::RoundBegin(b), Stage::Idle) => {
                    if b.round <= last_round {
                        return Err(MigrateError::Protocol(format!(
                            "round {} after round {last_round}",
                            b.round
                        )));
                    }
                    stage = Stage::InRound {
                        round: b.round,
                        last: b.is_final(),
                    };
                }
                (Message::Pages { gpa, data }, Stage::InRound { .. }) => {
                    let first = layout.check_range(gpa, data.len() as u64).ok_or_else(|| {
                        MigrateError::Protocol(format!(
                            "pages {gpa:#x}..{:#x} lie outside guest memory",
                            gpa.saturating_add(data.len() as u64)
                        ))
                    })?;
                    vm.memory()
                        .write_slice(data, GuestAddress(gpa))
                        .map_err(|e| MigrateError::Memory {
                            gpa,
                            msg: e.to_string(),
                        })?;
                    let n = data.len() as u64 / PAGE_SIZE;
                    written.set_run(first, n);
                    self.report.pages += n;
                }
                (Message::ZeroPages(runs), Stage::InRound { .. }) => {
                    for (gpa, count) in runs {
                        let first = count
                            .checked_mul(PAGE_SIZE)
                            .and_then(|len| layout.check_range(gpa, len))
                            .ok_or_else(|| {
                                MigrateError::Protocol(format!(
                                    "zero run at {gpa:#x} of {count} pages lies outside guest memory"
                                ))
                            })?;
                        for p in 0..count {
                            // Pages never written here are still zero: no need to touch them.
                            if written.get(first + p) {
                                let a = gpa + p * PAGE_SIZE;
                                vm.memory()
                                    .write_slice(&zero_page, GuestAddress(a))
                                    .map_err(|e| MigrateError::Memory {
                                        gpa: a,
                                        msg: e.to_string(),
                                    })?;
                                written.unset(first + p);
                            }
                        }
                        self.report.zero_pages += count;
                    }
                }
                (Message::RoundEnd(e), Stage::InRound { round, last }) => {
                    if e.round != round {
                        return Err(MigrateError::Protocol(format!(
                            "RoundEnd for round {} inside round {round}",
                            e.round
                        )));
                    }
                    last_round = round;
                    self.report.rounds = round;
                    stage = if last { Stage::AwaitState } else { Stage::Idle };
                }
                (Message::State(s), Stage::AwaitState) => break s,
                (Message::Abort(a), _) => {
                    return Err(MigrateError::PeerAborted {
                        code: a.code,
                        message: a.message,
                    });
                }
                (m, stage) => {
                    return Err(MigrateError::Protocol(format!(
                        "unexpected {} ({})",
                        m.name(),
                        match stage {
                            Stage::Idle => "between rounds",
                            Stage::InRound { .. } => "inside a round",
                            Stage::AwaitState => "after the final round, expecting State",
                        }
                    )));
                }
            }
        };
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
        let vm = self.vm.as_mut().expect("created");
        vm.restore(*state).map_err(|source| MigrateError::Vm {
            op: "restore",
            source,
        })?;
        w.ready()
            .and_then(|()| w.flush())
            .map_err(self.wire("sending Ready"))?;

        // The VM runs here only once Commit has been read.
        match r
            .next("waiting for Commit")
            .map_err(self.wire("waiting for Commit"))?
        {
            Message::Commit { migration_id } if migration_id == start.migration_id => {}
            Message::Commit { migration_id } => {
                return Err(MigrateError::Protocol(format!(
                    "Commit for migration {migration_id:#x}, expected {:#x}",
                    start.migration_id
                )));
            }
            Message::Abort(a) => {
                return Err(MigrateError::PeerAborted {
                    code: a.code,
                    message: a.message,
                });
            }
            m => {
                return Err(MigrateError::Protocol(format!(
                    "expected Commit, got {}",
                    m.name()
                )));
            }
        }
        let t_commit = Instant::now();
        let vm = self.vm.as_mut().expect("created");
        if !self.keep_paused {
            vm.resume().map_err(|source| MigrateError::Vm {
                op: "resume after Commit",
                source,
            })?;
        }
        self.report.running = !self.keep_paused;
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
}

impl MigrateError {
    /// The Abort code the destination sends for this error.
    fn abort_code_dest(&self) -> AbortCode {
        match self {
            MigrateError::Vm { op: "create", .. } => AbortCode::Resources,
            MigrateError::Vm { .. } => AbortCode::Restore,
            MigrateError::Memory { .. } => AbortCode::Internal,
            e => e.abort_code(),
        }
    }
}

/// Runs the destination's post-handshake state machine over `stream` with
/// the fake VM, as a fuzz target would: any input must end in a clean error
/// or a resumed VM, and everything created must be discarded on error.
/// Only built with the `fuzzing` feature (it skips authentication).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub fn fuzz_session(stream: &[u8], max_memory: u64) -> Result<(), MigrateError> {
    let secret = Secret::from_bytes(&[0u8; 32]).expect("32 bytes");
    let opts = DestOptions::new(secret, max_memory);
    let mut factory = crate::fake::FakeFactory::default();
    let mut r = MessageReader::new(stream);
    let mut w = MessageWriter::new(std::io::sink());
    let mut rx = Receiver {
        opts: &opts,
        vm: None,
        report: ReceiveReport::default(),
        keep_paused: false,
    };
    let result = rx.session(&mut r, &mut w, &mut factory);
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
        assert_eq!(log.resumed, 0, "resumed a VM that failed to arrive");
        assert_eq!(log.created, log.discarded, "created VM not discarded");
    }
    result
}
