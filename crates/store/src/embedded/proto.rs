//! The embedded store's local protocol: JSON messages, each framed by a
//! 4-byte big-endian length, over a Unix socket. A connection carries
//! either requests and their answers, one at a time, or one watch (a Watch
//! request, then Watching, then Events and Idle heartbeats until either side
//! closes).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::types::{Event, Lease, LeaseId, Listing, Revision, Txn, TxnOutcome};

/// The largest frame either side accepts.
pub(crate) const MAX_FRAME: usize = 64 << 20;

/// How often an idle watch connection says it is alive.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    Range {
        key: String,
        prefix: bool,
    },
    Txn(Txn),
    Grant {
        ttl_secs: i64,
    },
    KeepAlive(LeaseId),
    Revoke(LeaseId),
    TimeToLive(LeaseId),
    Watch {
        prefix: String,
        from: Option<Revision>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Range(Listing),
    Txn(TxnOutcome),
    Lease(Lease),
    Done,
    TimeToLive(Option<Duration>),
    /// The watch is set up; its first event will be at `first` or later.
    Watching {
        first: Revision,
    },
    Events(Vec<Event>),
    /// A watch's heartbeat: nothing new up to `revision`.
    Idle {
        revision: Revision,
    },
    Error(WireError),
}

/// The errors the store itself produces, as they travel.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireError {
    LeaseNotFound(LeaseId),
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    InvalidKey(String),
    InvalidConfig(String),
    Rejected(String),
    Protocol(String),
}

impl WireError {
    pub(crate) fn from_store(e: StoreError) -> WireError {
        match e {
            StoreError::LeaseNotFound(id) => WireError::LeaseNotFound(id),
            StoreError::Compacted {
                requested,
                compacted,
            } => WireError::Compacted {
                requested,
                compacted,
            },
            StoreError::InvalidKey(k) => WireError::InvalidKey(k),
            StoreError::InvalidConfig(m) => WireError::InvalidConfig(m),
            StoreError::Rejected { reason, .. } => WireError::Rejected(reason),
            other => WireError::Protocol(other.to_string()),
        }
    }

    pub(crate) fn into_store(self, op: &'static str) -> StoreError {
        match self {
            WireError::LeaseNotFound(id) => StoreError::LeaseNotFound(id),
            WireError::Compacted {
                requested,
                compacted,
            } => StoreError::Compacted {
                requested,
                compacted,
            },
            WireError::InvalidKey(k) => StoreError::InvalidKey(k),
            WireError::InvalidConfig(m) => StoreError::InvalidConfig(m),
            WireError::Rejected(reason) => StoreError::Rejected { op, reason },
            WireError::Protocol(m) => StoreError::Protocol(m),
        }
    }
}

/// Writes one message; a write that does not finish by `deadline` fails
/// (and the connection must then be dropped).
pub(crate) fn write_message<T: Serialize>(
    stream: &mut UnixStream,
    msg: &T,
    deadline: Duration,
) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a message of {} bytes is over the limit", body.len()),
        ));
    }
    stream.set_write_timeout(Some(deadline))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame)
}

/// Reads frames across timeouts: a frame cut by a timeout is kept and
/// finished by the next read.
#[derive(Default)]
pub(crate) struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// The next message, or None if none was complete by `until`.
    pub(crate) fn read<T: for<'de> Deserialize<'de>>(
        &mut self,
        stream: &mut UnixStream,
        until: Instant,
    ) -> io::Result<Option<T>> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return serde_json::from_slice(&frame)
                    .map(Some)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 16 * 1024];
            match stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn take_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Some(len) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame of {len} bytes is over the limit"),
            ));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(frame))
    }
}
