//! What the destination says while pages stream out: a reader thread
//! forwards its messages, so an Abort is seen between two page batches
//! rather than after the next blocking write.

use std::io::{self, BufReader};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tls::Conn;
use wire::{Abort, Accept, Message, MessageReader, PageRequest, PostcopyDone, Resumed, WireError};

use super::txn::{Staging, Txn};
use crate::error::MigrateError;
use crate::progress::CancelToken;

/// What the reader thread forwards from the destination.
pub(super) enum FromDest {
    Accept(Accept),
    Ready,
    Resumed(Resumed),
    PageRequest(PageRequest),
    PostcopyDone(PostcopyDone),
    /// The destination owns the VM for good (answers the final grant), by
    /// migration id.
    Owned(u64),
    /// A lease request, by its sequence number.
    LeaseRequest(u64),
    /// The answer to a Drain, by its sequence number.
    Drained(u64),
    Abort(Abort),
    /// A complete transaction (post-copy), not applied yet.
    Txn(Box<Txn>),
    /// A transaction refused as it arrived (out of place, not adding up).
    BadTxn(String),
    Other(&'static str),
    Error(WireError),
}

/// What the destination asks for in post-copy.
pub(super) enum Ask {
    Pages(PageRequest),
    /// A lease renewal, by request number.
    Lease(u64),
    Txn(Box<Txn>),
}

/// The engine's end of the reader thread.
pub(super) struct Incoming {
    rx: Receiver<FromDest>,
    stall: Duration,
    cancel: CancelToken,
}

impl Incoming {
    /// Starts the reader thread over `r`. The thread ends when the
    /// connection does (shut it down, then join the handle).
    /// `max_txn_pages` bounds what one transaction may stage (the guest's pages).
    pub(super) fn spawn(
        r: MessageReader<BufReader<Conn>>,
        stall: Duration,
        cancel: CancelToken,
        max_txn_pages: u64,
    ) -> io::Result<(Incoming, JoinHandle<u64>)> {
        let (tx, rx) = mpsc::channel();
        let reader = thread::Builder::new()
            .name("migrate-reader".into())
            .spawn(move || reader_loop(r, tx, max_txn_pages))?;
        Ok((Incoming { rx, stall, cancel }, reader))
    }

    /// Checks for cancellation and for anything the destination said.
    pub(super) fn poll(&self) -> Result<(), MigrateError> {
        if self.cancel.is_cancelled() {
            return Err(MigrateError::Cancelled);
        }
        match self.rx.try_recv() {
            Ok(FromDest::Error(WireError::Closed { .. })) => {
                Err(MigrateError::Wire(WireError::Closed {
                    during: "sending pages",
                }))
            }
            Ok(FromDest::Error(e)) => Err(MigrateError::from_wire(e, "sending pages", self.stall)),
            Ok(m) => Err(self.unexpected(m, "while pages are being sent")),
            Err(TryRecvError::Empty) => Ok(()),
            Err(TryRecvError::Disconnected) => Err(MigrateError::Wire(WireError::Closed {
                during: "sending pages",
            })),
        }
    }

    /// The error for a message that has no place `when` it arrived.
    pub(super) fn unexpected(&self, m: FromDest, when: &'static str) -> MigrateError {
        match m {
            FromDest::Abort(a) => MigrateError::PeerAborted {
                code: a.code,
                message: a.message,
            },
            FromDest::Error(e) => MigrateError::from_wire(e, when, self.stall),
            FromDest::Accept(_) => MigrateError::Protocol(format!("unexpected Accept {when}")),
            FromDest::PageRequest(_) => {
                MigrateError::Protocol(format!("unexpected PageRequest {when}"))
            }
            FromDest::PostcopyDone(_) => {
                MigrateError::Protocol(format!("unexpected PostcopyDone {when}"))
            }
            FromDest::LeaseRequest(_) => {
                MigrateError::Protocol(format!("unexpected LeaseRequest {when}"))
            }
            FromDest::Drained(_) => MigrateError::Protocol(format!("unexpected Drained {when}")),
            FromDest::Ready => MigrateError::Protocol(format!("unexpected Ready {when}")),
            FromDest::Resumed(_) => MigrateError::Protocol(format!("unexpected Resumed {when}")),
            FromDest::Owned(_) => MigrateError::Protocol(format!("unexpected Owned {when}")),
            FromDest::Txn(t) => MigrateError::Protocol(format!(
                "unexpected transaction {} from the destination {when}",
                t.seq
            )),
            FromDest::BadTxn(why) => MigrateError::Protocol(format!("bad transaction: {why}")),
            FromDest::Other(name) => {
                MigrateError::Protocol(format!("unexpected {name} from the destination {when}"))
            }
        }
    }

    /// Waits up to the stall timeout for the destination's next message.
    pub(super) fn wait(
        &self,
        during: &'static str,
        cancellable: bool,
    ) -> Result<FromDest, MigrateError> {
        let deadline = Instant::now() + self.stall;
        loop {
            if cancellable && self.cancel.is_cancelled() {
                return Err(MigrateError::Cancelled);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(MigrateError::Stalled {
                    during,
                    timeout: self.stall,
                });
            }
            match self.rx.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(FromDest::Error(WireError::Closed { .. })) => {
                    return Err(MigrateError::Wire(WireError::Closed { during }));
                }
                Ok(FromDest::Error(e)) => {
                    return Err(MigrateError::from_wire(e, during, self.stall));
                }
                Ok(m) => return Ok(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(MigrateError::Wire(WireError::Closed { during }));
                }
            }
        }
    }

    /// During post-copy: the destination's next page or lease request,
    /// waiting up to `timeout` (none came: `None`). Anything else is an error.
    pub(super) fn next_request(&self, timeout: Duration) -> Result<Option<Ask>, MigrateError> {
        const DURING: &str = "serving post-copy pages";
        let got = if timeout.is_zero() {
            match self.rx.try_recv() {
                Ok(m) => Ok(m),
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Disconnected) => Err(()),
            }
        } else {
            match self.rx.recv_timeout(timeout) {
                Ok(m) => Ok(m),
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => Err(()),
            }
        };
        match got {
            Ok(FromDest::PageRequest(r)) => Ok(Some(Ask::Pages(r))),
            Ok(FromDest::LeaseRequest(seq)) => Ok(Some(Ask::Lease(seq))),
            Ok(FromDest::Txn(t)) => Ok(Some(Ask::Txn(t))),
            Ok(FromDest::Error(WireError::Closed { .. })) | Err(()) => {
                Err(MigrateError::Wire(WireError::Closed { during: DURING }))
            }
            Ok(m) => Err(self.unexpected(m, "while post-copy pages are being sent")),
        }
    }

    /// A write failed: if the destination explained itself (Abort) just
    /// before closing, report that instead of the bare I/O error.
    pub(super) fn explain(&self, e: MigrateError) -> MigrateError {
        if !matches!(
            e,
            MigrateError::ConnectionLost { .. }
                | MigrateError::Wire(
                    WireError::Io(_) | WireError::Encode(_) | WireError::Closed { .. }
                )
        ) {
            return e;
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        while let Ok(m) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if let FromDest::Abort(a) = m {
                return MigrateError::PeerAborted {
                    code: a.code,
                    message: a.message,
                };
            }
        }
        e
    }
}

/// Forwards the destination's messages until the connection ends; returns
/// the bytes read. Transactions are staged here and forwarded whole.
fn reader_loop(
    mut r: MessageReader<BufReader<Conn>>,
    tx: mpsc::Sender<FromDest>,
    max_txn_pages: u64,
) -> u64 {
    let mut staging = Staging::new(max_txn_pages);
    loop {
        let item = match r.next("migrating").map(|m| staging.feed(m)) {
            Ok(Ok(Ok(None))) => continue,
            Ok(Ok(Ok(Some(t)))) => FromDest::Txn(Box::new(t)),
            Ok(Err(why)) => {
                let _ = tx.send(FromDest::BadTxn(why));
                return r.bytes_read();
            }
            Ok(Ok(Err(m))) => match m {
                Message::Accept(a) => FromDest::Accept(a),
                Message::PageRequest(x) => FromDest::PageRequest(x),
                Message::PostcopyDone(x) => FromDest::PostcopyDone(x),
                Message::LeaseRequest(x) => FromDest::LeaseRequest(x.seq),
                Message::Ready => FromDest::Ready,
                Message::Drained(d) => FromDest::Drained(d.seq),
                Message::Resumed(x) => FromDest::Resumed(x),
                Message::Owned { migration_id } => FromDest::Owned(migration_id),
                Message::Abort(a) => FromDest::Abort(a),
                m => FromDest::Other(m.name()),
            },
            Err(e) => {
                let _ = tx.send(FromDest::Error(e));
                return r.bytes_read();
            }
        };
        if tx.send(item).is_err() {
            return r.bytes_read();
        }
    }
}
