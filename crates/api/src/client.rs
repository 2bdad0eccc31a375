//! A small blocking client: one HTTP/1.1 request per connection over the
//! Unix socket, JSON in and out, with a deadline on the whole exchange.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Default deadline for one request (a snapshot of a large VM takes seconds).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response accepted.
const MAX_RESPONSE: usize = 64 << 20;
const MAX_HEADER: usize = 64 << 10;

/// Errors talking to an API server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {reason} (is `ferry run --api {path}` running?)")]
    Connect {
        path: String,
        reason: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: no complete response within {after:?}")]
    Timeout { path: String, after: Duration },
    #[error("{path}: connection failed: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: bad HTTP response: {what}")]
    BadResponse { path: String, what: String },
    #[error("{path}: response body is not JSON: {source}")]
    BadJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// The server answered with an error status (from `get_ok`/`put_ok`).
    #[error("{method} {route} failed (HTTP {status}): {message}")]
    Status {
        method: &'static str,
        route: String,
        status: u16,
        message: String,
    },
}

/// Client of one API socket.
#[derive(Clone, Debug)]
pub struct Client {
    path: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(path: impl Into<PathBuf>) -> Client {
        Client {
            path: path.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Deadline for each whole request (connect, send, receive).
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `GET route`: status code and JSON body (`Value::Null` if empty).
    pub fn get(&self, route: &str) -> Result<(u16, Value), ClientError> {
        self.request("GET", route, None)
    }

    /// `PUT route` with an optional JSON body.
    pub fn put(&self, route: &str, body: Option<&Value>) -> Result<(u16, Value), ClientError> {
        self.request("PUT", route, body)
    }

    /// [`Client::get`], turning a non-2xx status into [`ClientError::Status`]
    /// carrying the server's error message.
    pub fn get_ok(&self, route: &str) -> Result<Value, ClientError> {
        let (status, body) = self.get(route)?;
        check("GET", route, status, body)
    }

    /// [`Client::put`], turning a non-2xx status into [`ClientError::Status`].
    pub fn put_ok(&self, route: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let (status, body) = self.put(route, body)?;
        check("PUT", route, status, body)
    }

    /// One request with any method.
    pub fn request(
        &self,
        method: &str,
        route: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let deadline = Instant::now() + self.timeout;
        let mut stream =
            UnixStream::connect(&self.path).map_err(|source| ClientError::Connect {
                path: self.path.display().to_string(),
                reason: connect_reason(&source),
                source,
            })?;
        let body = match body {
            Some(v) => serde_json::to_vec(v).map_err(|source| ClientError::BadJson {
                path: self.path.display().to_string(),
                source,
            })?,
            None => Vec::new(),
        };
        let mut msg = format!(
            "{method} {route} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        )
        .into_bytes();
        if !body.is_empty() {
            msg.extend_from_slice(b"Content-Type: application/json\r\n");
        }
        msg.extend_from_slice(b"\r\n");
        msg.extend_from_slice(&body);
        self.with_deadline(&stream, deadline)?;
        stream.write_all(&msg).map_err(|e| self.io_error(e))?;

        // Headers.
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 8192];
        let (status, header_len, content_length) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut length = None;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let v = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|s| s.trim().parse::<usize>().ok());
                            length = Some(v.ok_or_else(|| self.bad("invalid Content-Length"))?);
                        }
                    }
                    break (status, n, length);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(self.bad(&format!("{e}"))),
            }
            if buf.len() > MAX_HEADER {
                return Err(self.bad("headers too large"));
            }
            let n = self.read_some(&mut stream, &mut chunk, deadline)?;
            if n == 0 {
                return Err(self.bad("connection closed before the response headers ended"));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        if content_length.is_some_and(|n| n > MAX_RESPONSE) {
            return Err(self.bad("response body too large"));
        }

        // Body: Content-Length bytes, or up to EOF without one.
        let mut body = buf.split_off(header_len);
        loop {
            if content_length.is_some_and(|n| body.len() >= n) {
                break;
            }
            if body.len() > MAX_RESPONSE {
                return Err(self.bad("response body too large"));
            }
            let n = self.read_some(&mut stream, &mut chunk, deadline)?;
            if n == 0 {
                if let Some(want) = content_length {
                    return Err(self.bad(&format!(
                        "connection closed after {} of {want} body bytes",
                        body.len()
                    )));
                }
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        if let Some(n) = content_length {
            body.truncate(n);
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok((status, Value::Null));
        }
        let value = serde_json::from_slice(&body).map_err(|source| ClientError::BadJson {
            path: self.path.display().to_string(),
            source,
        })?;
        Ok((status, value))
    }

    fn read_some(
        &self,
        stream: &mut UnixStream,
        buf: &mut [u8],
        deadline: Instant,
    ) -> Result<usize, ClientError> {
        loop {
            self.with_deadline(stream, deadline)?;
            match stream.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    /// Sets socket timeouts to the time left before `deadline`.
    fn with_deadline(&self, stream: &UnixStream, deadline: Instant) -> Result<(), ClientError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timed_out());
        }
        stream
            .set_read_timeout(Some(left))
            .and_then(|_| stream.set_write_timeout(Some(left)))
            .map_err(|e| self.io_error(e))
    }

    fn io_error(&self, e: io::Error) -> ClientError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timed_out(),
            _ => ClientError::Io {
                path: self.path.display().to_string(),
                source: e,
            },
        }
    }

    fn timed_out(&self) -> ClientError {
        ClientError::Timeout {
            path: self.path.display().to_string(),
            after: self.timeout,
        }
    }

    fn bad(&self, what: &str) -> ClientError {
        ClientError::BadResponse {
            path: self.path.display().to_string(),
            what: what.to_string(),
        }
    }
}

fn connect_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::ConnectionRefused => {
            "connection refused, nothing listens there (stale socket file)".into()
        }
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn check(
    method: &'static str,
    route: &str,
    status: u16,
    body: Value,
) -> Result<Value, ClientError> {
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let message = body
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            if body.is_null() {
                "no details".into()
            } else {
                body.to_string()
            }
        });
    Err(ClientError::Status {
        method,
        route: route.to_string(),
        status,
        message,
    })
}
