//! The API server: tiny_http on a Unix socket, requests handed to a
//! caller's handler on a small pool of worker threads; streamed answers
//! get a thread each.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crate::message::{LineStream, Method, Request, Response};

/// Largest request body the server reads.
pub const MAX_REQUEST_BODY: usize = 1 << 20;
/// Most streamed answers (event followers) served at once; more get 503.
pub const MAX_STREAMS: usize = 16;
/// Worker threads running the handler: a slow request (snapshot, migrate)
/// does not block status queries.
const WORKERS: usize = 4;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("an API server is already listening on {0}")]
    AlreadyRunning(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("cannot bind API socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start API server on {path}: {msg}")]
    Start { path: PathBuf, msg: String },
}

/// A running API server. Dropping it (or [`Server::shutdown`]) stops it and
/// removes the socket file.
pub struct Server {
    path: PathBuf,
    inner: Option<Arc<tiny_http::Server>>,
    stopping: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Listens on the Unix socket `path` and serves every request by calling
    /// `handler`, several at a time. Refuses if a live server already
    /// listens there; removes a stale socket file left by a dead one.
    pub fn bind<H>(path: impl AsRef<Path>, handler: H) -> Result<Server, ServerError>
    where
        H: Fn(Request) -> Response + Send + Sync + 'static,
    {
        let path = std::path::absolute(path.as_ref()).map_err(|source| ServerError::Bind {
            path: path.as_ref().to_path_buf(),
            source,
        })?;
        clear_stale_socket(&path)?;
        let listener = UnixListener::bind(&path).map_err(|source| match source.kind() {
            io::ErrorKind::AddrInUse => ServerError::AlreadyRunning(path.clone()),
            _ => ServerError::Bind {
                path: path.clone(),
                source,
            },
        })?;
        let inner = tiny_http::Server::from_listener(listener, None).map_err(|e| {
            let _ = std::fs::remove_file(&path);
            ServerError::Start {
                path: path.clone(),
                msg: e.to_string(),
            }
        })?;
        let inner = Arc::new(inner);
        let handler = Arc::new(handler);
        let stopping = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(AtomicUsize::new(0));
        let workers = (0..WORKERS)
            .map(|i| {
                let inner = inner.clone();
                let handler = handler.clone();
                let stopping = stopping.clone();
                let streams = streams.clone();
                std::thread::Builder::new()
                    .name(format!("api-{i}"))
                    .spawn(move || worker(&inner, &*handler, &stopping, &streams))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ServerError::Start {
                path: path.clone(),
                msg: format!("cannot spawn worker thread: {source}"),
            })?;
        Ok(Server {
            path,
            inner: Some(inner),
            stopping,
            workers,
        })
    }

    /// Absolute path of the socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting requests, waits for requests being handled to
    /// finish, and removes the socket file. Streams end with their
    /// iterators, not here. Must not be called from inside the handler (it
    /// would wait for itself).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            inner.unblock();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // Dropping the last reference closes the listener and removes the file.
        drop(inner);
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => {} // nothing more to do on the way out
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("path", &self.path).finish()
    }
}

/// Refuses a live server or a non-socket file at `path`; removes a socket
/// nobody listens on.
fn clear_stale_socket(path: &Path) -> Result<(), ServerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServerError::Bind {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket(path.to_path_buf()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServerError::AlreadyRunning(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .map_err(|source| ServerError::Bind {
                path: path.to_path_buf(),
                source,
            }),
        Err(source) => Err(ServerError::Bind {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn worker(
    server: &tiny_http::Server,
    handler: &(dyn Fn(Request) -> Response + Sync),
    stopping: &AtomicBool,
    streams: &Arc<AtomicUsize>,
) {
    loop {
        match server.recv() {
            Ok(rq) => serve(rq, handler, streams),
            // Unblocked by stop(), or the listener failed: stop either way
            // once asked to; otherwise keep waiting.
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(_) => {}
        }
    }
}

fn serve(
    mut rq: tiny_http::Request,
    handler: &(dyn Fn(Request) -> Response + Sync),
    streams: &Arc<AtomicUsize>,
) {
    let method = Method::from(rq.method());
    let path = rq.url().split('?').next().unwrap_or("").to_string();
    let response = if rq.body_length().is_some_and(|n| n > MAX_REQUEST_BODY) {
        too_large()
    } else {
        let mut body = Vec::new();
        match rq
            .as_reader()
            .take(MAX_REQUEST_BODY as u64 + 1)
            .read_to_end(&mut body)
        {
            Err(e) => Response::error(400, format!("cannot read request body: {e}")),
            Ok(_) if body.len() > MAX_REQUEST_BODY => too_large(),
            Ok(_) => {
                let req = Request { method, path, body };
                catch_unwind(AssertUnwindSafe(|| handler(req))).unwrap_or_else(|_| {
                    Response::error(500, "internal error: the request handler panicked")
                })
            }
        }
    };
    match response.stream {
        Some(lines) => start_stream(rq, response.headers, lines, streams.clone()),
        None => {
            let _ = rq.respond(to_tiny(&response));
        }
    }
}

/// Sends a streamed answer from a thread of its own, within [`MAX_STREAMS`].
fn start_stream(
    rq: tiny_http::Request,
    headers: Vec<(String, String)>,
    lines: LineStream,
    streams: Arc<AtomicUsize>,
) {
    if streams.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        streams.fetch_sub(1, Ordering::SeqCst);
        let busy = Response::error(
            503,
            format!("already serving {MAX_STREAMS} streams; try again later"),
        );
        let _ = rq.respond(to_tiny(&busy));
        return;
    }
    let counter = streams.clone();
    let spawned = std::thread::Builder::new()
        .name("api-stream".into())
        .spawn(move || {
            let mut w = rq.into_writer();
            let _ = write_stream(&mut w, &headers, lines);
            // Free the slot before the client can see the end of the stream.
            counter.fetch_sub(1, Ordering::SeqCst);
            drop(w);
        });
    if spawned.is_err() {
        // The request went with the closure: its connection just closes.
        streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The head, then one JSON value per line, flushed as each comes. No
/// Content-Length: the body ends when the connection closes.
fn write_stream(
    w: &mut dyn Write,
    headers: &[(String, String)],
    lines: LineStream,
) -> io::Result<()> {
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nCache-Control: no-cache\r\nConnection: close\r\n",
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.flush()?;
    for value in lines.0 {
        let mut line = serde_json::to_vec(&value)?;
        line.push(b'\n');
        w.write_all(&line)?;
        w.flush()?;
    }
    Ok(())
}

fn too_large() -> Response {
    Response::error(
        413,
        format!("request body larger than {MAX_REQUEST_BODY} bytes"),
    )
}

fn to_tiny(r: &Response) -> tiny_http::Response<io::Cursor<Vec<u8>>> {
    let data = match &r.body {
        Some(v) => serde_json::to_vec(v).unwrap_or_default(),
        None => Vec::new(),
    };
    let mut out = tiny_http::Response::from_data(data).with_status_code(r.status);
    if r.body.is_some() {
        let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
            .expect("static header is valid");
        out = out.with_header(header);
    }
    for (name, value) in &r.headers {
        // A header the handler got wrong is left out rather than sent broken.
        if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            out = out.with_header(h);
        }
    }
    out
}
