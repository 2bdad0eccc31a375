//! A process waiting for its VM to arrive by live migration, then hosting
//! it: what `ferry receive` does.

use std::net::{Shutdown, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use api::events::EventKind;
use api::types::vm_state;
use migrate::{Admitted, Gate, Secret, Session};

use crate::hosting::{Ended, HostConfig, Hosting};
use crate::instance::Instance;
use crate::serial::SerialConfig;
use crate::statedir::StateDir;

/// How often a waiting receiver checks for a shutdown request.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

/// What a receiver accepts.
pub struct IncomingConfig {
    /// Address to listen on, e.g. 127.0.0.1:7000.
    pub listen: String,
    /// The secret shared with the source.
    pub secret: Secret,
    /// Largest guest memory accepted, in bytes.
    pub max_memory: u64,
    /// Give up when no source has authenticated within this long.
    pub accept_timeout: Option<Duration>,
    /// In post-copy, the pages one fault asks the source for
    /// ([`migrate::DestOptions::fault_block_pages`]).
    pub fault_block_pages: u64,
    /// In post-copy, how long to wait for the source to reconnect after the
    /// link broke ([`migrate::DestOptions::recovery_timeout`]).
    pub recovery_timeout: Duration,
    /// Mutual TLS before the handshake ([`migrate::DestOptions::tls`]).
    pub tls: Option<tls::Credentials>,
    /// Base of the arriving VM's state directory: its memory in a shared
    /// file there, as `ferry run` keeps it (`None`: anonymous memory).
    pub state_dir: Option<PathBuf>,
}

impl IncomingConfig {
    /// A receiver on `listen` with the engine's defaults.
    pub fn new(listen: String, secret: Secret, max_memory: u64) -> IncomingConfig {
        IncomingConfig {
            listen,
            secret,
            max_memory,
            accept_timeout: None,
            fault_block_pages: migrate::FAULT_BLOCK_PAGES,
            recovery_timeout: migrate::DEFAULT_RECOVERY_TIMEOUT,
            tls: None,
            state_dir: None,
        }
    }
}

/// Listens, hosts the instance (state incoming) until one source has
/// authenticated and its VM has arrived, then runs the VM until it ends. A
/// shutdown asked for before the VM arrived ends with [`Ended::ShutDown`]
/// and the VM stays on its source.
pub fn receive(
    config: IncomingConfig,
    host_config: &HostConfig,
    serial: &SerialConfig,
) -> anyhow::Result<Ended> {
    let listener = TcpListener::bind(&config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let mut hosting = Hosting::start(host_config, vm_state::INCOMING)?;
    let host = hosting.instance.clone();
    let state = match &config.state_dir {
        Some(base) => Some(StateDir::create(base, host.id())?),
        None => None,
    };
    let mut opts = migrate::DestOptions::new(config.secret, config.max_memory);
    opts.accept_timeout = config.accept_timeout;
    opts.fault_block_pages = config.fault_block_pages;
    opts.recovery_timeout = config.recovery_timeout;
    opts.tls = config.tls;
    let gate = migrate::listen(listener, &opts)?;
    tracing::info!(vm = %host.id(), "waiting for a VM on {}", gate.local_addr());
    let source = match next_unless_shutdown(&gate, opts.accept_timeout, &host) {
        Ok(Some(source)) => source,
        Ok(None) => {
            tracing::info!(vm = %host.id(), "shut down before any VM arrived");
            return Ok(Ended::ShutDown);
        }
        Err(e) => return Err(e).context("incoming migration failed; nothing runs here"),
    };
    // The port stays open only for this source to reconnect in post-copy.
    let mut factory = crate::adapter::Factory {
        serial: Some(serial.sink(0)?),
        // The API says where the arriving VM's status page is, so a
        // sampler can follow the switchover.
        on_create: Some(Box::new({
            let host = host.clone();
            move |vm: &vmm::Vm| host.arriving(vm)
        })),
        events: Some(host.events().clone()),
        memory_file: state.as_ref().map(|s| s.memory_file()),
    };
    let received = receive_unless_shutdown(source, &gate, &mut factory, &opts, &host);
    // A source that did not hear we own the VM keeps its copy and comes
    // back to ask: it is told until its recovery time is over.
    match &received {
        Ok(r) => migrate::confirm_owned(gate, &opts, &r.report),
        Err(_) => drop(gate),
    }
    let received = match received {
        Ok(r) => r,
        Err(_) if host.shutdown_requested() => {
            tracing::info!(vm = %host.id(), "shut down during an incoming migration: it was abandoned and the VM stays on the source");
            return Ok(Ended::ShutDown);
        }
        Err(e) => return Err(e).context("incoming migration failed; nothing runs here"),
    };
    if host.shutdown_requested() {
        tracing::warn!(vm = %host.id(), "a shutdown was asked for during the incoming migration, which completed anyway: the VM runs here; ask again to stop it");
        hosting.forgive_shutdowns();
    }
    let r = &received.report;
    tracing::debug!(
        vm = %host.id(),
        pages = r.pages,
        rounds = r.rounds,
        bytes = r.bytes_received,
        "incoming migration done"
    );
    if r.postcopy_pages > 0 {
        let ms = |v: f64| units::format_duration(Duration::from_secs_f64(v / 1e3));
        tracing::info!(
            vm = %host.id(),
            "post-copy: {} pages fetched in {}; {} faults waited p50 {} p99 {}, {} in all",
            r.postcopy_pages,
            ms(r.postcopy_ms),
            r.faults,
            ms(r.fault_p50_ms),
            ms(r.fault_p99_ms),
            ms(r.fault_wait_ms),
        );
    }
    host.events().publish(EventKind::MigrationReceived {
        migration: format!("{:016x}", r.migration_id),
        from: r.peer.clone(),
    });
    let vm = Arc::try_unwrap(received.vm.vm)
        .map_err(|_| anyhow::anyhow!("the received VM is still shared after its migration"))?;
    if let Some(state) = state {
        hosting.instance.set_state_dir(state);
    }
    hosting.run(vm)
}

/// Receives a VM from an authenticated `source`; a shutdown asked for
/// meanwhile closes the connection, so the migration fails (and rolls back
/// to the source) unless it is already past Commit.
fn receive_unless_shutdown(
    source: Admitted<Session>,
    gate: &Gate<Session>,
    factory: &mut crate::adapter::Factory,
    opts: &migrate::DestOptions,
    host: &Instance,
) -> anyhow::Result<migrate::Received<crate::adapter::Incoming>> {
    let watched = source.stream.try_clone()?;
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                // Once the VM runs here, cutting the link could only lose it.
                if host.shutdown_requested() && !opts.committed.load(Ordering::SeqCst) {
                    let _ = watched.shutdown(Shutdown::Both);
                    return;
                }
                std::thread::sleep(SHUTDOWN_POLL);
            }
        });
        let received = migrate::receive_with(source, Some(gate), factory, opts);
        done.store(true, Ordering::SeqCst);
        Ok(received?)
    })
}

/// The first source that authenticates at `gate`; `None` if a shutdown is
/// asked for first; an error once `accept_timeout` has passed.
fn next_unless_shutdown(
    gate: &Gate<Session>,
    accept_timeout: Option<Duration>,
    host: &Instance,
) -> Result<Option<Admitted<Session>>, migrate::MigrateError> {
    let deadline = accept_timeout.map(|t| Instant::now() + t);
    loop {
        if let Some(source) = gate.next(Some(SHUTDOWN_POLL)) {
            return Ok(Some(source));
        }
        if host.shutdown_requested() {
            return Ok(None);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(migrate::MigrateError::AcceptTimeout {
                waited: accept_timeout.unwrap_or_default(),
                refused: gate.stats().refused,
            });
        }
    }
}
