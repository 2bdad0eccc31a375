//! The gate every listening socket of Ferry goes through before it trusts
//! a peer: the migration port today, the cluster's agent and manager ports
//! and post-copy's reconnects later.
//!
//! A [`Gate`] owns the listener. Each connection gets its own handshake
//! thread, with a short deadline ([`GateLimits::deadline`], 5 s) and reads
//! of bounded size (the [`Handshake`] decides; the migration handshake reads
//! at most [`HANDSHAKE_MAX_PAYLOAD`](crate::HANDSHAKE_MAX_PAYLOAD) bytes per
//! frame). At most [`GateLimits::max_pending`] connections authenticate at
//! once, and at most [`GateLimits::max_pending_per_host`] from one host;
//! more are closed at once. A refused peer is told nothing beyond what the
//! handshake says (version negotiation, one generic refusal) and is logged
//! in one line at a bounded rate (`log`). Authenticated connections come
//! out of [`Gate::next`], each to be served as its own session: nothing an
//! unauthenticated peer does reaches them.
//!
//! A gate opened with [`tls::Credentials`] first runs mutual TLS (the peer
//! must show a certificate of the cluster's CA), within the same deadline,
//! then the handshake inside it: the handshake is a second factor.

mod accept;
mod log;
mod pending;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::auth::Secret;
use crate::error::WireError;
use crate::handshake::{Offer, Session, dest_handshake};

pub use log::Refusal;
pub use pending::Busy;
pub use pending::Pending;

use accept::Shared;

/// How long a connection may take to authenticate, by default.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// Connections authenticating at once, by default.
pub const MAX_PENDING: usize = 32;
/// Connections authenticating at once from one host (an IPv4 address, an
/// IPv6 /64), by default.
pub const MAX_PENDING_PER_HOST: usize = 8;

/// What a gate allows an unauthenticated peer, and how much it logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateLimits {
    /// From accept to authenticated; then the connection is closed.
    pub deadline: Duration,
    /// Connections authenticating at once; more are closed at once.
    pub max_pending: usize,
    /// Connections authenticating at once from one host.
    pub max_pending_per_host: usize,
    /// Refusals logged one by one before the rate limit applies.
    pub log_burst: u32,
    /// Past the burst, at most one refusal line per interval, and at most
    /// one summary line ("N more refused") per interval.
    pub log_interval: Duration,
}

impl Default for GateLimits {
    fn default() -> Self {
        GateLimits {
            deadline: HANDSHAKE_DEADLINE,
            max_pending: MAX_PENDING,
            max_pending_per_host: MAX_PENDING_PER_HOST,
            log_burst: 10,
            log_interval: Duration::from_secs(10),
        }
    }
}

/// How a listening socket authenticates a peer: run on a connection that
/// has not authenticated yet, on the connection's own thread.
pub trait Handshake: Send + Sync + 'static {
    /// What authentication yields (the negotiated session; later, which
    /// existing session a reconnect belongs to).
    type Output: Send + 'static;

    /// Authenticates the peer. Every read and write on `conn` fails with a
    /// timeout once the gate's deadline has passed. An error refuses the
    /// peer: say nothing to it beyond a generic refusal.
    fn run(&self, conn: &mut Pending) -> Result<Self::Output, WireError>;
}

/// The migration handshake, destination side ([`dest_handshake`]).
#[derive(Clone, Debug)]
pub struct DestHandshake {
    pub secret: Secret,
    pub offer: Offer,
}

impl Handshake for DestHandshake {
    type Output = Session;

    fn run(&self, conn: &mut Pending) -> Result<Session, WireError> {
        dest_handshake(conn, &self.secret, &self.offer)
    }
}

/// A connection that authenticated: its own now. Its socket has no
/// timeouts; the session sets its own.
#[derive(Debug)]
pub struct Admitted<T> {
    pub stream: tls::Conn,
    pub peer: SocketAddr,
    /// What the handshake yielded.
    pub auth: T,
}

/// What a gate has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Connections that authenticated.
    pub admitted: u64,
    /// Connections refused (too many, too slow, not authenticated).
    pub refused: u64,
    /// Connections authenticating now.
    pub pending: usize,
}

/// A listening socket whose connections must authenticate before anyone
/// sees them. Dropping it closes the listener and every connection still
/// authenticating.
pub struct Gate<T> {
    /// In a mutex so that several threads may wait in `next`.
    admitted: Mutex<Receiver<Admitted<T>>>,
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Gate<T> {
    /// Starts accepting on `listener` (on a thread of its own); with
    /// `tls`, every peer must complete mutual TLS before the handshake.
    pub fn open<H: Handshake<Output = T>>(
        listener: TcpListener,
        handshake: H,
        limits: GateLimits,
        tls: Option<tls::Credentials>,
    ) -> std::io::Result<Gate<T>> {
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared::new(limits, tls));
        // Authenticated peers are trusted; the bound only keeps a consumer
        // that stopped calling `next` from holding many of them.
        let (tx, admitted) = mpsc::sync_channel(shared.limits.max_pending);
        let thread = accept::spawn(listener, Arc::new(handshake), Arc::clone(&shared), tx)?;
        Ok(Gate {
            admitted: Mutex::new(admitted),
            shared,
            local_addr,
            thread: Some(thread),
        })
    }

    /// The next authenticated connection, waiting at most `timeout`
    /// (forever if `None`); `None` when none came in time.
    pub fn next(&self, timeout: Option<Duration>) -> Option<Admitted<T>> {
        let admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        match timeout {
            None => admitted.recv().ok(),
            Some(t) => admitted.recv_timeout(t).ok(),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> GateStats {
        GateStats {
            admitted: self.shared.admitted.load(Ordering::Relaxed),
            refused: self.shared.refused.load(Ordering::Relaxed),
            pending: self.shared.pending_count(),
        }
    }
}

impl<T> Drop for Gate<T> {
    fn drop(&mut self) {
        self.shared.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
