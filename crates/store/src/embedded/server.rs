//! [`EmbeddedServer`]: the embedded store, held in memory by the process
//! that starts it and served to the others (manager, agents) on a Unix
//! socket. Agents in other network namespaces reach it too: a socket path
//! belongs to the filesystem, not to a network namespace.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::core::{Core, HISTORY_LIMIT};
use super::proto::{FrameReader, HEARTBEAT, Request, Response, WireError, write_message};
use crate::config::{DEFAULT_DEADLINE, StoreConfig};
use crate::error::{Result, StoreError};
use crate::store::Store;
use crate::types::Revision;

/// Most connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 256;
/// How often idle connection threads and the lease reaper look up.
const POLL: Duration = Duration::from_millis(100);
/// How long dropping the server waits for its connections to close.
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// How often the accept loop looks for new connections.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// How long the server waits for a client to take an answer.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);

struct Shared {
    core: Mutex<Core>,
    /// Signalled after every change, for watches.
    changed: Condvar,
    stop: AtomicBool,
    connections: AtomicUsize,
}

impl Shared {
    /// The core, with leases that are due already expired.
    fn core(&self) -> MutexGuard<'_, Core> {
        let mut core = self.core.lock().unwrap_or_else(|e| e.into_inner());
        if core.expire(Instant::now()) {
            self.changed.notify_all();
        }
        core
    }
}

/// The embedded store, serving until dropped. Its state lives in this
/// process's memory: it is lost when the process ends (a one-machine
/// cluster starts afresh; its agents publish their state again).
pub struct EmbeddedServer {
    path: PathBuf,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl EmbeddedServer {
    /// Serves a new, empty store on the Unix socket `path` (created with
    /// mode 0600). A stale socket left by a dead server is replaced; a live
    /// one is an error.
    pub fn start(path: impl Into<PathBuf>) -> Result<EmbeddedServer> {
        Self::with_history(path.into(), HISTORY_LIMIT)
    }

    fn with_history(path: PathBuf, history: usize) -> Result<EmbeddedServer> {
        let listener = bind(&path)?;
        let shared = Arc::new(Shared {
            core: Mutex::new(Core::new(history)),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("store-accept".into())
                .spawn(move || accept_loop(&listener, &shared))
        };
        let reaper = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("store-leases".into())
                .spawn(move || {
                    while !shared.stop.load(Ordering::SeqCst) {
                        drop(shared.core());
                        thread::sleep(POLL);
                    }
                })
        };
        let threads = [accept, reaper]
            .into_iter()
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| StoreError::InvalidConfig(format!("cannot start threads: {e}")))?;
        Ok(EmbeddedServer {
            path,
            shared,
            threads,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How clients reach this store.
    pub fn config(&self) -> StoreConfig {
        StoreConfig::Embedded {
            socket: self.path.clone(),
            deadline: DEFAULT_DEADLINE,
        }
    }

    /// A client of this store, through its socket like any other.
    pub fn store(&self) -> Result<Store> {
        Store::connect(&self.config())
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Connection threads see the flag within a poll or a heartbeat;
        // once they are gone no client is answered any more.
        let end = Instant::now() + STOP_LIMIT;
        while self.shared.connections.load(Ordering::SeqCst) > 0 && Instant::now() < end {
            thread::sleep(ACCEPT_POLL);
        }
        let _ = fs::remove_file(&self.path);
    }
}

fn bind(path: &Path) -> Result<UnixListener> {
    let config = |m: String| StoreError::InvalidConfig(m);
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(config(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(config(format!("a store already serves {}", path.display())));
        }
        fs::remove_file(path)
            .map_err(|e| config(format!("cannot remove stale {}: {e}", path.display())))?;
    }
    let listener = UnixListener::bind(path)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| config(format!("cannot listen on {}: {e}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| config(format!("cannot restrict {}: {e}", path.display())))?;
    Ok(listener)
}

/// Accepts until the server stops. The listener does not block, so the
/// loop sees the stop flag even if the socket file was removed under it.
fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) => {
                thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let shared2 = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("store-conn".into())
            .spawn(move || {
                serve(&shared2, stream);
                shared2.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Answers requests one at a time until the client leaves, sends garbage,
/// or asks for a watch (which then owns the connection).
fn serve(shared: &Shared, mut stream: UnixStream) {
    let mut reader = FrameReader::default();
    while !shared.stop.load(Ordering::SeqCst) {
        let req = match reader.read::<Request>(&mut stream, Instant::now() + POLL) {
            Ok(None) => continue,
            Ok(Some(req)) => req,
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    let answer = Response::Error(WireError::Protocol(e.to_string()));
                    let _ = write_message(&mut stream, &answer, WRITE_DEADLINE);
                }
                return;
            }
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let answer = match req {
            Request::Watch { prefix, from } => return watch(shared, stream, &prefix, from),
            req => answer(shared, req),
        };
        if write_message(&mut stream, &answer, WRITE_DEADLINE).is_err() {
            return;
        }
    }
}

fn answer(shared: &Shared, req: Request) -> Response {
    let now = Instant::now();
    let mut core = shared.core();
    let before = core.revision();
    let result = match req {
        Request::Range { key, prefix } => Ok(Response::Range(core.range(&key, prefix))),
        Request::Txn(txn) => core.txn(&txn).map(Response::Txn),
        Request::Grant { ttl_secs } => core.grant(ttl_secs, now).map(Response::Lease),
        Request::KeepAlive(id) => core.keep_alive(id, now).map(|()| Response::Done),
        Request::Revoke(id) => core.revoke(id).map(|()| Response::Done),
        Request::TimeToLive(id) => Ok(Response::TimeToLive(core.time_to_live(id, now))),
        Request::Watch { .. } => Err(StoreError::Protocol(
            "a watch needs its own connection".into(),
        )),
    };
    if core.revision() != before {
        shared.changed.notify_all();
    }
    result.unwrap_or_else(|e| Response::Error(WireError::from_store(e)))
}

/// Streams the events under `prefix` from `from` until the client leaves;
/// says it is alive every [`HEARTBEAT`] when nothing happens.
fn watch(shared: &Shared, mut stream: UnixStream, prefix: &str, from: Option<Revision>) {
    let mut next = {
        let core = shared.core();
        let first = from.unwrap_or(core.revision() + 1);
        if let Err(e) = core.events_since(prefix, first) {
            let answer = Response::Error(WireError::from_store(e));
            let _ = write_message(&mut stream, &answer, WRITE_DEADLINE);
            return;
        }
        first
    };
    if write_message(
        &mut stream,
        &Response::Watching { first: next },
        WRITE_DEADLINE,
    )
    .is_err()
    {
        return;
    }
    let mut last_sent = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        let answer = {
            let mut core = shared.core();
            if core.revision() < next {
                core = shared
                    .changed
                    .wait_timeout(core, HEARTBEAT)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            match core.events_since(prefix, next) {
                Err(e) => Response::Error(WireError::from_store(e)),
                Ok(events) => {
                    // Everything up to the current revision has been looked at.
                    next = next.max(core.revision() + 1);
                    if events.is_empty() && last_sent.elapsed() < HEARTBEAT {
                        continue;
                    } else if events.is_empty() {
                        Response::Idle {
                            revision: core.revision(),
                        }
                    } else {
                        Response::Events(events)
                    }
                }
            }
        };
        let failed = matches!(answer, Response::Error(_));
        if write_message(&mut stream, &answer, WRITE_DEADLINE).is_err() || failed {
            return;
        }
        last_sent = Instant::now();
    }
}
