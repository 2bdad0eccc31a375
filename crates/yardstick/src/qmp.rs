//! A small QMP (QEMU Machine Protocol) client.
//!
//! QMP is JSON objects, one per line, over a socket: QEMU greets with
//! `{"QMP": ...}`, the client enters command mode with `qmp_capabilities`,
//! then each `{"execute": ..., "id": N}` gets exactly one `{"return": ...}` or
//! `{"error": {"class", "desc"}}` carrying the same id. Asynchronous
//! `{"event": ...}` objects may arrive at any time; they are kept, not treated
//! as replies.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// Errors of the QMP client. Each names what went wrong and with which command.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The QMP socket could not be opened.
    #[error("cannot connect to QMP socket {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the socket failed (includes read timeouts).
    #[error("QMP I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// QEMU closed the connection (it exited or crashed).
    #[error("QMP connection closed by QEMU while {context}")]
    Closed { context: String },
    /// QEMU sent something that is not valid QMP.
    #[error("QMP protocol error while {context}: {detail}")]
    Protocol { context: String, detail: String },
    /// QEMU answered a command with an error object.
    #[error("QMP command `{command}` failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

/// An asynchronous QMP event, as QEMU sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// Event name, e.g. `MIGRATION` or `STOP`.
    pub name: String,
    /// The event's `data` member (`null` when absent).
    pub data: Value,
    /// QEMU's timestamp of the event, seconds since the UNIX epoch.
    pub timestamp: f64,
}

/// A connected QMP session in command mode.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    events: Vec<QmpEvent>,
    version: String,
}

impl Qmp {
    /// Connects to a QMP Unix socket, reads the greeting and negotiates
    /// capabilities. `timeout` bounds each single read (a command whose reply
    /// takes longer fails with [`QmpError::Io`]).
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path).map_err(|source| QmpError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_stream(stream, timeout)
    }

    /// Starts a session over an already connected stream (used by
    /// [`Qmp::connect`] and by tests with a fake QEMU).
    pub fn from_stream(stream: UnixStream, timeout: Duration) -> Result<Qmp, QmpError> {
        let io = |context: &str| {
            let context = context.to_string();
            move |source| QmpError::Io { context, source }
        };
        stream
            .set_read_timeout(Some(timeout))
            .map_err(io("setting the read timeout"))?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(io("setting the write timeout"))?;
        let writer = stream.try_clone().map_err(io("cloning the socket"))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
            events: Vec::new(),
            version: String::new(),
        };
        let greeting = qmp.read_object("reading the greeting")?;
        let Some(info) = greeting.get("QMP") else {
            return Err(QmpError::Protocol {
                context: "reading the greeting".into(),
                detail: format!("expected a {{\"QMP\": ...}} greeting, got {greeting}"),
            });
        };
        let v = &info["version"]["qemu"];
        qmp.version = format!("{}.{}.{}", v["major"], v["minor"], v["micro"]);
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// QEMU's version from the greeting, e.g. `7.2.22`.
    pub fn qemu_version(&self) -> &str {
        &self.version
    }

    /// Runs one command and returns its `return` value. Events that arrive
    /// meanwhile are stored (see [`Qmp::take_events`]).
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        let mut line = request.to_string();
        line.push('\n');
        let context = format!("sending `{command}`");
        self.writer
            .write_all(line.as_bytes())
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                    QmpError::Closed {
                        context: context.clone(),
                    }
                }
                _ => QmpError::Io {
                    context: context.clone(),
                    source,
                },
            })?;
        let context = format!("waiting for the reply to `{command}`");
        loop {
            let reply = self.read_object(&context)?;
            if reply.get("event").is_some() {
                self.push_event(&reply);
                continue;
            }
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                return Err(QmpError::Protocol {
                    context,
                    detail: format!("reply with unexpected id (want {id}): {reply}"),
                });
            }
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                let text = |k: &str| {
                    err.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string()
                };
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: text("class"),
                    desc: text("desc"),
                });
            }
            return Err(QmpError::Protocol {
                context,
                detail: format!("reply has neither `return` nor `error`: {reply}"),
            });
        }
    }

    /// Returns and forgets the events received so far.
    pub fn take_events(&mut self) -> Vec<QmpEvent> {
        std::mem::take(&mut self.events)
    }

    fn push_event(&mut self, obj: &Value) {
        let ts = &obj["timestamp"];
        let secs = ts["seconds"].as_f64().unwrap_or(0.0);
        let micros = ts["microseconds"].as_f64().unwrap_or(0.0);
        self.events.push(QmpEvent {
            name: obj["event"].as_str().unwrap_or("").to_string(),
            data: obj.get("data").cloned().unwrap_or(Value::Null),
            timestamp: secs + micros / 1e6,
        });
    }

    fn read_object(&mut self, context: &str) -> Result<Value, QmpError> {
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|source| QmpError::Io {
                    context: context.to_string(),
                    source,
                })?;
            if n == 0 {
                return Err(QmpError::Closed {
                    context: context.to_string(),
                });
            }
            let trimmed = line.trim();
            if trimmed.is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(trimmed).map_err(|e| QmpError::Protocol {
                context: context.to_string(),
                detail: format!("invalid JSON ({e}): {trimmed}"),
            })?;
            if !value.is_object() {
                return Err(QmpError::Protocol {
                    context: context.to_string(),
                    detail: format!("expected a JSON object, got {trimmed}"),
                });
            }
            return Ok(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::thread;

    /// A scripted fake QEMU: sends the greeting, then answers each request
    /// with the closure's output lines.
    fn fake(script: impl Fn(&Value) -> Vec<String> + Send + 'static) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().unwrap();
        thread::spawn(move || {
            let mut w = theirs.try_clone().unwrap();
            writeln!(
                w,
                r#"{{"QMP": {{"version": {{"qemu": {{"micro": 22, "minor": 2, "major": 7}}, "package": ""}}, "capabilities": []}}}}"#
            )
            .unwrap();
            for line in BufReader::new(theirs).lines() {
                let Ok(line) = line else { return };
                let req: Value = serde_json::from_str(&line).unwrap();
                for out in script(&req) {
                    if writeln!(w, "{out}").is_err() {
                        return;
                    }
                }
            }
        });
        ours
    }

    #[test]
    fn events_are_skipped_and_kept() {
        let s = fake(|req| {
            let id = &req["id"];
            vec![
                r#"{"timestamp": {"seconds": 10, "microseconds": 500000}, "event": "STOP"}"#
                    .to_string(),
                format!(r#"{{"return": {{"status": "running"}}, "id": {id}}}"#),
            ]
        });
        let mut q = Qmp::from_stream(s, Duration::from_secs(5)).unwrap();
        assert_eq!(q.qemu_version(), "7.2.22");
        let r = q.execute("query-status", None).unwrap();
        assert_eq!(r["status"], "running");
        let ev = q.take_events();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].name, "STOP");
        assert!((ev[0].timestamp - 10.5).abs() < 1e-9);
        assert!(q.take_events().is_empty());
    }

    #[test]
    fn error_reply_names_command_and_class() {
        let s = fake(|req| {
            let id = &req["id"];
            if req["execute"] == "qmp_capabilities" {
                vec![format!(r#"{{"return": {{}}, "id": {id}}}"#)]
            } else {
                vec![format!(
                    r#"{{"error": {{"class": "CommandNotFound", "desc": "The command nope has not been found"}}, "id": {id}}}"#
                )]
            }
        });
        let mut q = Qmp::from_stream(s, Duration::from_secs(5)).unwrap();
        let err = q.execute("nope", None).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`nope`") && msg.contains("CommandNotFound"),
            "{msg}"
        );
    }

    #[test]
    fn bad_greeting_and_garbage_are_protocol_errors() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        thread::spawn(move || {
            let mut w = theirs;
            writeln!(w, r#"{{"hello": 1}}"#).unwrap();
        });
        let err = Qmp::from_stream(ours, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, QmpError::Protocol { .. }), "{err}");
        assert!(err.to_string().contains("greeting"), "{err}");

        let s = fake(|req| {
            if req["execute"] == "qmp_capabilities" {
                vec![format!(r#"{{"return": {{}}, "id": {}}}"#, req["id"])]
            } else {
                vec!["this is not json".to_string()]
            }
        });
        let mut q = Qmp::from_stream(s, Duration::from_secs(5)).unwrap();
        let err = q.execute("query-status", None).unwrap_err();
        assert!(err.to_string().contains("invalid JSON"), "{err}");
    }

    #[test]
    fn closed_connection_is_reported() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let err = Qmp::from_stream(ours, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, QmpError::Closed { .. }), "{err}");
    }

    #[test]
    fn silent_peer_times_out() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let err = Qmp::from_stream(ours, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, QmpError::Io { .. }), "{err}");
    }
}
