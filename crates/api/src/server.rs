//! The API server: tiny_http on a Unix socket, requests handed to a
//! caller's handler on a small pool of worker threads.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::types::ErrorBody;

/// Largest request body the server reads.
pub const MAX_REQUEST_BODY: usize = 1 << 20;
/// Worker threads running the handler: a slow request (snapshot, migrate)
/// does not block status queries.
const WORKERS: usize = 4;

/// HTTP method of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Post,
    Delete,
    Other(String),
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Other(m) => m,
        })
    }
}

impl From<&tiny_http::Method> for Method {
    fn from(m: &tiny_http::Method) -> Self {
        match m {
            tiny_http::Method::Get => Method::Get,
            tiny_http::Method::Put => Method::Put,
            tiny_http::Method::Post => Method::Post,
            tiny_http::Method::Delete => Method::Delete,
            other => Method::Other(other.as_str().to_string()),
        }
    }
}

/// A request as the handler sees it. `path` has no query string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub body: Vec<u8>,
}

impl Request {
    /// The body parsed as `T`; on failure the 400 response to send.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Response> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Err(Response::error(
                400,
                format!("{} needs a JSON body", self.path),
            ));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| Response::error(400, format!("invalid JSON body for {}: {e}", self.path)))
    }
}

/// What the handler answers. `body: None` sends no body.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Option<Value>,
}

impl Response {
    /// 200 with `value` as JSON body (500 if it cannot be serialized).
    pub fn ok<T: Serialize>(value: &T) -> Response {
        Response::json(200, value)
    }

    /// `status` with `value` as JSON body (500 if it cannot be serialized).
    pub fn json<T: Serialize>(status: u16, value: &T) -> Response {
        match serde_json::to_value(value) {
            Ok(v) => Response {
                status,
                body: Some(v),
            },
            Err(e) => Response::error(500, format!("cannot serialize response: {e}")),
        }
    }

    /// 204, no body.
    pub fn no_content() -> Response {
        Response {
            status: 204,
            body: None,
        }
    }

    /// `status` with body `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        let body = ErrorBody {
            error: message.into(),
        };
        Response {
            status,
            body: Some(serde_json::to_value(body).unwrap_or(Value::Null)),
        }
    }
}

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
        let workers = (0..WORKERS)
            .map(|i| {
                let inner = inner.clone();
                let handler = handler.clone();
                let stopping = stopping.clone();
                std::thread::Builder::new()
                    .name(format!("api-{i}"))
                    .spawn(move || worker(&inner, &*handler, &stopping))
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
    /// finish, and removes the socket file. Must not be called from inside
    /// the handler (it would wait for itself).
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
) {
    loop {
        match server.recv() {
            Ok(rq) => serve(rq, handler),
            // Unblocked by stop(), or the listener failed: stop either way
            // once asked to; otherwise keep waiting.
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(_) => {}
        }
    }
}

fn serve(mut rq: tiny_http::Request, handler: &(dyn Fn(Request) -> Response + Sync)) {
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
    let _ = rq.respond(to_tiny(&response));
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
    out
}
