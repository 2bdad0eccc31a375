//! Reading frames off a stream and decoding them as messages.

use std::io::Read;

use vmstate::frame::FrameReader;

use super::{HANDSHAKE_MAX_PAYLOAD, Message, handshake_kinds, protocol_kinds};
use crate::error::WireError;

/// Reads and decodes messages; one payload buffer is reused.
#[derive(Debug)]
pub struct MessageReader<R: Read> {
    inner: FrameReader<R>,
}

impl<R: Read> MessageReader<R> {
    pub fn new(inner: R) -> Self {
        MessageReader {
            inner: FrameReader::new(inner, protocol_kinds()),
        }
    }

    /// A reader for a destination's side of the handshake: only Hello,
    /// AuthProof and Abort, each at most [`HANDSHAKE_MAX_PAYLOAD`] bytes, so
    /// an unauthenticated peer can make it neither allocate nor decode more.
    pub fn handshake(inner: R) -> Self {
        MessageReader {
            inner: FrameReader::new(inner, handshake_kinds())
                .with_max_payload(HANDSHAKE_MAX_PAYLOAD),
        }
    }

    /// The next message. `during` names what the caller is waiting for, for
    /// the error when the peer closes the connection at a frame boundary.
    pub fn next(&mut self, during: &'static str) -> Result<Message<'_>, WireError> {
        match self.inner.next_frame()? {
            Some(frame) => Message::decode(&frame),
            None => Err(WireError::Closed { during }),
        }
    }

    /// Bytes of complete frames read so far.
    pub fn bytes_read(&self) -> u64 {
        self.inner.bytes_read()
    }

    pub fn get_ref(&self) -> &R {
        self.inner.get_ref()
    }

    pub fn get_mut(&mut self) -> &mut R {
        self.inner.get_mut()
    }

    pub fn into_inner(self) -> R {
        self.inner.into_inner()
    }
}
