//! A small blocking client: one HTTP/1.1 request per connection over the
//! Unix socket, JSON in and out, with a deadline on the whole exchange;
//! streamed answers are read line by line with no deadline.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
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
        let (mut stream, head) = self.send(method, route, body, deadline)?;
        let status = head.status;
        let body = self.read_body(&mut stream, head, deadline)?;
        Ok((status, body))
    }

    /// `GET route` answered by a stream of JSON lines (`GET /api/v1/events`):
    /// the lines as they come, with no deadline once the answer began.
    /// An error status becomes [`ClientError::Status`].
    pub fn stream(&self, route: &str) -> Result<EventLines, ClientError> {
        let deadline = Instant::now() + self.timeout;
        let (mut stream, head) = self.send("GET", route, None, deadline)?;
        if !(200..300).contains(&head.status) {
            let status = head.status;
            let body = self.read_body(&mut stream, head, deadline)?;
            return Err(status_error("GET", route, status, body));
        }
        stream
            .set_read_timeout(None)
            .map_err(|e| self.io_error(e))?;
        Ok(EventLines {
            client: self.clone(),
            reader: BufReader::new(stream),
            first: head.rest,
        })
    }

    /// Waits until the server answers `GET /api/v1/ping`, for at most
    /// `within`: for a process just started, whose socket may not exist yet.
    /// A path that exists but is not a socket fails at once.
    pub fn wait_ready(&self, within: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = self
                .clone()
                .with_timeout(left.max(Duration::from_millis(100)))
                .get_ok(crate::routes::PING);
            match attempt {
                Ok(_) => return Ok(()),
                Err(ClientError::Connect { source, .. })
                    if matches!(
                        source.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) && !self.not_a_socket()
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Connects, sends the request and reads the response's head.
    fn send(
        &self,
        method: &str,
        route: &str,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<(UnixStream, Head), ClientError> {
        let mut stream =
            UnixStream::connect(&self.path).map_err(|source| ClientError::Connect {
                path: self.path.display().to_string(),
                reason: self.connect_reason(&source),
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
        let head = self.read_head(&mut stream, deadline)?;
        Ok((stream, head))
    }

    /// Status line and headers; what was read beyond them stays in `rest`.
    fn read_head(&self, stream: &mut UnixStream, deadline: Instant) -> Result<Head, ClientError> {
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 8192];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut content_length = None;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let v = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|s| s.trim().parse::<usize>().ok());
                            content_length =
                                Some(v.ok_or_else(|| self.bad("invalid Content-Length"))?);
                        }
                    }
                    return Ok(Head {
                        status,
                        content_length,
                        rest: buf.split_off(n),
                    });
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(self.bad(&format!("{e}"))),
            }
            if buf.len() > MAX_HEADER {
                return Err(self.bad("headers too large"));
            }
            let n = self.read_some(stream, &mut chunk, deadline)?;
            if n == 0 {
                return Err(self.bad("connection closed before the response headers ended"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The body: Content-Length bytes, or up to EOF without one; as JSON.
    fn read_body(
        &self,
        stream: &mut UnixStream,
        head: Head,
        deadline: Instant,
    ) -> Result<Value, ClientError> {
        if head.content_length.is_some_and(|n| n > MAX_RESPONSE) {
            return Err(self.bad("response body too large"));
        }
        let mut chunk = [0u8; 8192];
        let mut body = head.rest;
        loop {
            if head.content_length.is_some_and(|n| body.len() >= n) {
                break;
            }
            if body.len() > MAX_RESPONSE {
                return Err(self.bad("response body too large"));
            }
            let n = self.read_some(stream, &mut chunk, deadline)?;
            if n == 0 {
                if let Some(want) = head.content_length {
                    return Err(self.bad(&format!(
                        "connection closed after {} of {want} body bytes",
                        body.len()
                    )));
                }
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        if let Some(n) = head.content_length {
            body.truncate(n);
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).map_err(|source| ClientError::BadJson {
            path: self.path.display().to_string(),
            source,
        })
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

    /// Why connecting failed, in words; a regular file is not "stale".
    fn connect_reason(&self, e: &io::Error) -> String {
        match e.kind() {
            io::ErrorKind::NotFound => "no such file".into(),
            io::ErrorKind::ConnectionRefused if self.not_a_socket() => "not a socket".into(),
            io::ErrorKind::ConnectionRefused => {
                "connection refused, nothing listens there (stale socket file)".into()
            }
            io::ErrorKind::PermissionDenied => "permission denied".into(),
            _ => e.to_string(),
        }
    }

    /// The path exists and is something other than a socket.
    fn not_a_socket(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| !m.file_type().is_socket())
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

/// A response's status line and headers.
struct Head {
    status: u16,
    content_length: Option<usize>,
    /// Body bytes read with the head.
    rest: Vec<u8>,
}

/// The lines of a streamed answer ([`Client::stream`]), each a JSON value
/// (for `/api/v1/events`, an [`crate::events::Event`]). Ends when the
/// server closes the stream.
pub struct EventLines {
    client: Client,
    reader: BufReader<UnixStream>,
    /// Bytes that came with the head.
    first: Vec<u8>,
}

impl std::fmt::Debug for EventLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLines")
            .field("path", &self.client.path)
            .finish()
    }
}

impl EventLines {
    fn next_line(&mut self) -> Result<Option<Vec<u8>>, ClientError> {
        let mut line = Vec::new();
        if let Some(pos) = self.first.iter().position(|&b| b == b'\n') {
            line = self.first.drain(..=pos).collect();
            return Ok(Some(line));
        }
        line.append(&mut self.first);
        let n = loop {
            match self.reader.read_until(b'\n', &mut line) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.client.io_error(e)),
            }
        };
        if line.len() > MAX_RESPONSE {
            return Err(self.client.bad("stream line too long"));
        }
        Ok((n > 0 || !line.is_empty()).then_some(line))
    }
}

impl Iterator for EventLines {
    type Item = Result<Value, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.next_line() {
                Ok(Some(l)) => l,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(
                serde_json::from_slice(&line).map_err(|source| ClientError::BadJson {
                    path: self.client.path.display().to_string(),
                    source,
                }),
            );
        }
    }
}

fn check(
    method: &'static str,
    route: &str,
    status: u16,
    body: Value,
) -> Result<Value, ClientError> {
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(status_error(method, route, status, body))
    }
}

/// An error status with the server's message.
fn status_error(method: &'static str, route: &str, status: u16, body: Value) -> ClientError {
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
    ClientError::Status {
        method,
        route: route.to_string(),
        status,
        message,
    }
}
