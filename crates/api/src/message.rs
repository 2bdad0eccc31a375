//! What a handler sees and answers: [`Request`] and [`Response`], with the
//! HTTP [`Method`]. A response is a JSON body, no body, or a [`LineStream`]
//! of newline-delimited JSON that lasts as long as its source.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::types::ErrorBody;

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

/// A response body sent one JSON value per line (`application/x-ndjson`)
/// as the iterator yields them, until it ends or the client goes away.
/// The server sends it from a thread of its own, so a stream never holds
/// a worker.
pub struct LineStream(pub Box<dyn Iterator<Item = Value> + Send>);

impl fmt::Debug for LineStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LineStream")
    }
}

/// What the handler answers. `body: None` and no `stream` sends no body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Option<Value>,
    /// Headers beyond Content-Type (e.g. `Allow` on a 405).
    pub headers: Vec<(String, String)>,
    /// A streamed body instead of `body`.
    pub stream: Option<LineStream>,
}

impl Response {
    /// 200 with `value` as JSON body (500 if it cannot be serialized).
    pub fn ok<T: Serialize>(value: &T) -> Response {
        Response::json(200, value)
    }

    /// `status` with `value` as JSON body (500 if it cannot be serialized).
    pub fn json<T: Serialize>(status: u16, value: &T) -> Response {
        match serde_json::to_value(value) {
            Ok(v) => Response::with_body(status, Some(v)),
            Err(e) => Response::error(500, format!("cannot serialize response: {e}")),
        }
    }

    /// 204, no body.
    pub fn no_content() -> Response {
        Response::with_body(204, None)
    }

    /// `status` with body `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        let body = ErrorBody {
            error: message.into(),
        };
        Response::with_body(
            status,
            Some(serde_json::to_value(body).unwrap_or(Value::Null)),
        )
    }

    /// 200 with a body of JSON lines taken from `lines` as they come.
    pub fn stream(lines: impl Iterator<Item = Value> + Send + 'static) -> Response {
        Response {
            stream: Some(LineStream(Box::new(lines))),
            ..Response::with_body(200, None)
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// The value of header `name` (case-insensitive), if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn with_body(status: u16, body: Option<Value>) -> Response {
        Response {
            status,
            body,
            headers: Vec::new(),
            stream: None,
        }
    }
}
