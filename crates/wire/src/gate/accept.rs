//! The gate's accept loop and each connection's handshake thread.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::log::{self, Refusal, RefusalLog};
use super::pending::{Host, Pending, PendingSet};
use super::{Admitted, GateLimits, Handshake};

/// How often the accept loop looks at its stop flag and due summaries.
const POLL: Duration = Duration::from_millis(200);
/// Handshake threads need little stack: a few frames of at most 512 bytes.
const HANDSHAKE_STACK: usize = 256 << 10;

/// What the accept loop, the handshake threads and the [`Gate`](super::Gate) share.
pub(super) struct Shared {
    pub(super) limits: GateLimits,
    /// Mutual TLS before the handshake, when the host has certificates.
    tls: Option<tls::Credentials>,
    stop: AtomicBool,
    pending: Mutex<PendingSet>,
    log: Mutex<RefusalLog>,
    pub(super) admitted: AtomicU64,
    pub(super) refused: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(super) fn new(mut limits: GateLimits, tls: Option<tls::Credentials>) -> Shared {
        limits.max_pending = limits.max_pending.max(1);
        limits.max_pending_per_host = limits.max_pending_per_host.clamp(1, limits.max_pending);
        let log = RefusalLog::new(limits.log_burst, limits.log_interval, Instant::now());
        Shared {
            limits,
            tls,
            stop: AtomicBool::new(false),
            pending: Mutex::new(PendingSet::default()),
            log: Mutex::new(log),
            admitted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    pub(super) fn pending_count(&self) -> usize {
        lock(&self.pending).len()
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Stops accepting and cuts every connection still authenticating.
    pub(super) fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
        lock(&self.pending).cut_all();
        if let Some(n) = lock(&self.log).take_summary(Instant::now()) {
            log::summary(n, self.limits.log_interval);
        }
    }

    fn refuse(&self, peer: SocketAddr, why: Refusal) {
        if self.stopping() {
            // Cut because the gate closed, not because of anything it did.
            tracing::debug!(%peer, "connection closed with its gate");
            return;
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        let lines = lock(&self.log).refusal(Instant::now());
        if let Some(n) = lines.summary {
            log::summary(n, self.limits.log_interval);
        }
        if lines.this {
            log::refused(peer, &why);
        }
    }

    fn tick(&self) {
        if let Some(n) = lock(&self.log).due(Instant::now()) {
            log::summary(n, self.limits.log_interval);
        }
    }
}

/// Starts the accept loop on its own thread.
pub(super) fn spawn<H: Handshake>(
    listener: TcpListener,
    handshake: Arc<H>,
    shared: Arc<Shared>,
    tx: SyncSender<Admitted<H::Output>>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("ferry-gate".into())
        .spawn(move || accept_loop(&listener, &handshake, &shared, &tx))
}

fn accept_loop<H: Handshake>(
    listener: &TcpListener,
    handshake: &Arc<H>,
    shared: &Arc<Shared>,
    tx: &SyncSender<Admitted<H::Output>>,
) {
    while !shared.stopping() {
        shared.tick();
        if !readable(listener, POLL) {
            continue;
        }
        loop {
            match listener.accept() {
                Ok((stream, peer)) => start(stream, peer, handshake, shared, tx),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors or memory, or the connection was
                    // reset while queued: wait a little, keep listening.
                    tracing::debug!("accept failed: {e}");
                    thread::sleep(Duration::from_millis(50));
                    break;
                }
            }
        }
    }
}

/// Waits until `listener` has a connection to accept, at most `limit`.
fn readable(listener: &TcpListener, limit: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, on a descriptor `listener` keeps open.
    let n = unsafe { libc::poll(&mut fd, 1, limit.as_millis() as libc::c_int) };
    n > 0
}

/// Gives `stream` a handshake slot and thread, or closes it at once.
fn start<H: Handshake>(
    stream: TcpStream,
    peer: SocketAddr,
    handshake: &Arc<H>,
    shared: &Arc<Shared>,
    tx: &SyncSender<Admitted<H::Output>>,
) {
    let slot = stream
        .try_clone()
        .map_err(Refusal::Resources)
        .and_then(|cut| {
            let l = &shared.limits;
            lock(&shared.pending)
                .admit(
                    Host::of(peer.ip()),
                    cut,
                    l.max_pending,
                    l.max_pending_per_host,
                )
                .map_err(Refusal::Busy)
        });
    let id = match slot {
        Ok(id) => id,
        Err(why) => return shared.refuse(peer, why),
    };
    let deadline = Instant::now() + shared.limits.deadline;
    let (handshake, sh, tx) = (Arc::clone(handshake), Arc::clone(shared), tx.clone());
    let spawned = thread::Builder::new()
        .name("ferry-handshake".into())
        .stack_size(HANDSHAKE_STACK)
        .spawn(move || {
            let result = secure(stream, &sh, deadline).map(|conn| {
                let mut conn = Pending::new(conn, peer, deadline);
                (handshake.run(&mut conn), conn)
            });
            lock(&sh.pending).release(id);
            match result {
                Ok((Ok(auth), conn)) => admit(conn, auth, &sh, &tx),
                Ok((Err(e), _)) => sh.refuse(peer, Refusal::Handshake(e)),
                Err(e) => sh.refuse(peer, Refusal::Tls(e)),
            }
        });
    if let Err(e) = spawned {
        lock(&shared.pending).release(id);
        shared.refuse(peer, Refusal::Resources(e));
    }
}

/// The connection after TLS, if the gate has credentials (the peer must
/// show a certificate of the cluster), by the handshake's deadline.
fn secure(stream: TcpStream, shared: &Shared, deadline: Instant) -> io::Result<tls::Conn> {
    match &shared.tls {
        Some(creds) => creds.accept(stream, deadline),
        None => Ok(stream.into()),
    }
}

/// Hands an authenticated connection to whoever calls `Gate::next`.
fn admit<T>(conn: Pending, auth: T, shared: &Shared, tx: &SyncSender<Admitted<T>>) {
    let peer = conn.peer();
    if shared.stopping() {
        return;
    }
    let stream = match conn.into_stream() {
        Ok(s) => s,
        Err(e) => return shared.refuse(peer, Refusal::Resources(e)),
    };
    shared.admitted.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, "connection authenticated");
    // Fails only when the gate is gone: the connection closes with it.
    let _ = tx.send(Admitted { stream, peer, auth });
}
