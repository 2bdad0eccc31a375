//! The embedded store's client: requests on one shared connection
//! (reconnected after any failure), each watch on a connection of its own.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::proto::{FrameReader, Request, Response, write_message};
use crate::error::{Result, StoreError};
use crate::store::Backend;
use crate::types::{Event, Lease, LeaseId, Listing, Revision, Txn, TxnOutcome};
use crate::watch::WatchStream;

struct Conn {
    stream: UnixStream,
    reader: FrameReader,
}

impl Conn {
    fn open(socket: &PathBuf, op: &'static str) -> Result<Conn> {
        let stream = UnixStream::connect(socket).map_err(|e| StoreError::Unavailable {
            op,
            reason: format!("{}: {e}", socket.display()),
        })?;
        Ok(Conn {
            stream,
            reader: FrameReader::default(),
        })
    }

    /// Sends `req` and waits for its answer until `until`.
    fn ask(&mut self, op: &'static str, req: &Request, deadline: Duration) -> Result<Response> {
        let until = Instant::now() + deadline;
        write_message(&mut self.stream, req, deadline).map_err(|e| io_error(op, e, deadline))?;
        match self.reader.read::<Response>(&mut self.stream, until) {
            Ok(Some(Response::Error(e))) => Err(e.into_store(op)),
            Ok(Some(resp)) => Ok(resp),
            Ok(None) => Err(StoreError::Timeout {
                op,
                after: deadline,
            }),
            Err(e) => Err(io_error(op, e, deadline)),
        }
    }
}

fn io_error(op: &'static str, e: io::Error, deadline: Duration) -> StoreError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => StoreError::Timeout {
            op,
            after: deadline,
        },
        io::ErrorKind::InvalidData => StoreError::Protocol(e.to_string()),
        _ => StoreError::Unavailable {
            op,
            reason: e.to_string(),
        },
    }
}

pub(crate) struct EmbeddedClient {
    socket: PathBuf,
    deadline: Duration,
    conn: Mutex<Option<Conn>>,
}

impl EmbeddedClient {
    /// No connection is made yet: the first call finds out whether the
    /// store is up.
    pub(crate) fn new(socket: PathBuf, deadline: Duration) -> Result<EmbeddedClient> {
        if deadline.is_zero() {
            return Err(StoreError::InvalidConfig("a zero deadline".into()));
        }
        Ok(EmbeddedClient {
            socket,
            deadline,
            conn: Mutex::new(None),
        })
    }

    fn request(&self, op: &'static str, req: Request) -> Result<Response> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if conn.is_none() {
            *conn = Some(Conn::open(&self.socket, op)?);
        }
        let result = conn.as_mut().map(|c| c.ask(op, &req, self.deadline));
        match result {
            Some(Ok(resp)) => Ok(resp),
            Some(Err(e)) => {
                // After a timeout or a broken stream the connection's state
                // is unknown: start the next request on a new one.
                if !matches!(
                    e,
                    StoreError::LeaseNotFound(_)
                        | StoreError::Compacted { .. }
                        | StoreError::InvalidKey(_)
                        | StoreError::InvalidConfig(_)
                        | StoreError::Rejected { .. }
                ) {
                    *conn = None;
                }
                Err(e)
            }
            None => unreachable!("connected above"),
        }
    }
}

fn unexpected(op: &'static str, resp: Response) -> StoreError {
    StoreError::Protocol(format!("{op}: unexpected answer {resp:?}"))
}

impl Backend for EmbeddedClient {
    fn range(&self, key: &str, prefix: bool) -> Result<Listing> {
        let req = Request::Range {
            key: key.to_owned(),
            prefix,
        };
        match self.request("get", req)? {
            Response::Range(l) => Ok(l),
            other => Err(unexpected("get", other)),
        }
    }

    fn txn(&self, txn: &Txn) -> Result<TxnOutcome> {
        match self.request("txn", Request::Txn(txn.clone()))? {
            Response::Txn(t) => Ok(t),
            other => Err(unexpected("txn", other)),
        }
    }

    fn watch(
        &self,
        prefix: &str,
        from: Option<Revision>,
    ) -> Result<(Box<dyn WatchStream>, Revision)> {
        let mut conn = Conn::open(&self.socket, "watch")?;
        let req = Request::Watch {
            prefix: prefix.to_owned(),
            from,
        };
        match conn.ask("watch", &req, self.deadline)? {
            Response::Watching { first } => {
                let watch = EmbeddedWatch {
                    conn,
                    deadline: self.deadline,
                    last_heard: Instant::now(),
                };
                Ok((Box::new(watch), first))
            }
            other => Err(unexpected("watch", other)),
        }
    }

    fn grant(&self, ttl_secs: i64) -> Result<Lease> {
        match self.request("lease grant", Request::Grant { ttl_secs })? {
            Response::Lease(l) => Ok(l),
            other => Err(unexpected("lease grant", other)),
        }
    }

    fn keep_alive(&self, id: LeaseId) -> Result<()> {
        match self.request("lease keep-alive", Request::KeepAlive(id))? {
            Response::Done => Ok(()),
            other => Err(unexpected("lease keep-alive", other)),
        }
    }

    fn revoke(&self, id: LeaseId) -> Result<()> {
        match self.request("lease revoke", Request::Revoke(id))? {
            Response::Done => Ok(()),
            other => Err(unexpected("lease revoke", other)),
        }
    }

    fn time_to_live(&self, id: LeaseId) -> Result<Option<Duration>> {
        match self.request("lease ttl", Request::TimeToLive(id))? {
            Response::TimeToLive(t) => Ok(t),
            other => Err(unexpected("lease ttl", other)),
        }
    }

    fn deadline(&self) -> Duration {
        self.deadline
    }
}

struct EmbeddedWatch {
    conn: Conn,
    deadline: Duration,
    /// When the server last said anything; silence longer than the
    /// deadline means it is gone even if the socket is not closed.
    last_heard: Instant,
}

impl WatchStream for EmbeddedWatch {
    fn next_batch(&mut self, until: Instant) -> Result<Vec<Event>> {
        loop {
            let got = self
                .conn
                .reader
                .read::<Response>(&mut self.conn.stream, until);
            match got.map_err(|e| io_error("watch", e, self.deadline))? {
                None if self.last_heard.elapsed() > self.deadline => {
                    return Err(StoreError::Timeout {
                        op: "watch",
                        after: self.deadline,
                    });
                }
                None => return Ok(Vec::new()),
                Some(resp) => {
                    self.last_heard = Instant::now();
                    match resp {
                        Response::Events(events) => return Ok(events),
                        Response::Idle { .. } => continue,
                        Response::Error(e) => return Err(e.into_store("watch")),
                        other => return Err(unexpected("watch", other)),
                    }
                }
            }
        }
    }
}
