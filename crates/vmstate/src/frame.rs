//! The frame layer: `kind u8 | flags u8 | reserved u16 | len u32 | payload | crc32c u32`,
//! little endian, the CRC covering header and payload. Used by snapshot
//! files and, with its own kinds (0x40-0xff), by the migration protocol.

use std::io::{self, Read, Write};

use crate::error::{DecodeError, EncodeError, FrameKind};

/// Bytes before the payload: kind, flags, reserved, length.
pub const FRAME_HEADER_LEN: usize = 8;
/// Bytes after the payload: crc32c.
pub const FRAME_TRAILER_LEN: usize = 4;
/// Largest payload any reader accepts; lengths are checked against it before
/// any buffer grows.
pub const MAX_PAYLOAD: u32 = 16 << 20;
/// Payload buffers grow at most this much ahead of the bytes actually read,
/// so a lying length on a short stream cannot make the reader allocate much.
const GROW_STEP: usize = 1 << 20;

/// Names of the frame kinds a reader accepts. Kinds not in the set are
/// refused as soon as their header is read.
#[derive(Clone)]
pub struct Kinds {
    names: [Option<&'static str>; 256],
}

impl Kinds {
    /// No kinds at all; add them with [`Kinds::with`].
    pub fn empty() -> Self {
        Kinds { names: [None; 256] }
    }

    /// Adds (or renames) a kind.
    pub fn with(mut self, kind: u8, name: &'static str) -> Self {
        self.names[kind as usize] = Some(name);
        self
    }

    pub fn contains(&self, kind: u8) -> bool {
        self.names[kind as usize].is_some()
    }

    /// The kind with its name, for messages.
    pub fn describe(&self, kind: u8) -> FrameKind {
        FrameKind {
            kind,
            name: self.names[kind as usize],
        }
    }
}

impl std::fmt::Debug for Kinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.names
                    .iter()
                    .enumerate()
                    .filter_map(|(k, n)| n.map(|n| (k, n))),
            )
            .finish()
    }
}

/// One verified frame, borrowed from the reader's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// 0-based position in the stream.
    pub index: u64,
    pub kind: FrameKind,
    pub flags: u8,
    pub payload: &'a [u8],
}

/// Writes frames to any `io::Write`. It does not buffer: give it a
/// `BufWriter` (or a socket with large writes) for small frames.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    frames: u64,
    bytes: u64,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(inner: W) -> Self {
        FrameWriter {
            inner,
            frames: 0,
            bytes: 0,
        }
    }

    /// Writes one frame whose payload is the concatenation of `parts`, each
    /// written straight from the caller's slice (no copy into a frame buffer).
    /// The frame layer knows kinds only as numbers: a
    /// [`EncodeError::PayloadTooLarge`] names the kind by its number.
    pub fn write_frame(&mut self, kind: u8, flags: u8, parts: &[&[u8]]) -> Result<(), EncodeError> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        if len > u64::from(MAX_PAYLOAD) {
            return Err(EncodeError::PayloadTooLarge {
                kind: FrameKind { kind, name: None },
                len,
                max: MAX_PAYLOAD,
            });
        }
        let mut header = [0u8; FRAME_HEADER_LEN];
        header[0] = kind;
        header[1] = flags;
        header[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        let mut crc = crc32c::crc32c(&header);
        for part in parts {
            crc = crc32c::crc32c_append(crc, part);
        }
        self.inner.write_all(&header)?;
        for part in parts {
            self.inner.write_all(part)?;
        }
        self.inner.write_all(&crc.to_le_bytes())?;
        self.frames += 1;
        self.bytes += (FRAME_HEADER_LEN + FRAME_TRAILER_LEN) as u64 + len;
        Ok(())
    }

    /// Frames written so far.
    pub fn frames_written(&self) -> u64 {
        self.frames
    }

    /// Bytes written so far, framing included.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// Reads and verifies frames from any `io::Read`, reusing one payload
/// buffer. It does not buffer its input: give it a `BufReader` for files.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    kinds: Kinds,
    max_payload: u32,
    buf: Vec<u8>,
    next_index: u64,
    bytes: u64,
}

impl<R: Read> FrameReader<R> {
    /// A reader accepting the given kinds, with payloads up to [`MAX_PAYLOAD`].
    pub fn new(inner: R, kinds: Kinds) -> Self {
        FrameReader {
            inner,
            kinds,
            max_payload: MAX_PAYLOAD,
            buf: Vec::new(),
            next_index: 0,
            bytes: 0,
        }
    }

    /// Lowers the largest accepted payload (never above [`MAX_PAYLOAD`]).
    pub fn with_max_payload(mut self, max: u32) -> Self {
        self.max_payload = max.min(MAX_PAYLOAD);
        self
    }

    /// The next verified frame, or `None` when the stream ends cleanly at a
    /// frame boundary. Errors: truncation inside a frame, unknown kind,
    /// non-zero reserved field, oversize length (checked before the buffer
    /// grows), checksum mismatch, and I/O errors (a socket read timeout
    /// shows up as `DecodeError::Io`). After an error the position in the
    /// stream is unknown: stop reading.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, DecodeError> {
        let index = self.next_index;
        let mut header = [0u8; FRAME_HEADER_LEN];
        let got = read_full(&mut self.inner, &mut header).map_err(|source| DecodeError::Io {
            frame: index,
            source,
        })?;
        if got == 0 {
            return Ok(None);
        }
        if got < FRAME_HEADER_LEN {
            return Err(DecodeError::Truncated {
                frame: index,
                kind: self
                    .kinds
                    .contains(header[0])
                    .then(|| self.kinds.describe(header[0])),
            });
        }
        let kind_byte = header[0];
        let flags = header[1];
        let reserved = u16::from_le_bytes([header[2], header[3]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if !self.kinds.contains(kind_byte) {
            return Err(DecodeError::UnknownKind {
                frame: index,
                kind: kind_byte,
            });
        }
        let kind = self.kinds.describe(kind_byte);
        if reserved != 0 {
            return Err(DecodeError::Reserved {
                frame: index,
                kind,
                reserved,
            });
        }
        if len > self.max_payload {
            return Err(DecodeError::Oversize {
                frame: index,
                kind,
                len,
                max: self.max_payload,
            });
        }
        let len = len as usize;
        // Grow the buffer only as data actually arrives.
        let mut filled = 0;
        while filled < len {
            let end = len.min(filled + GROW_STEP.max(filled));
            if self.buf.len() < end {
                self.buf.resize(end, 0);
            }
            let got = read_full(&mut self.inner, &mut self.buf[filled..end]).map_err(|source| {
                DecodeError::Io {
                    frame: index,
                    source,
                }
            })?;
            filled += got;
            if filled < end {
                return Err(DecodeError::Truncated {
                    frame: index,
                    kind: Some(kind),
                });
            }
        }
        let mut trailer = [0u8; FRAME_TRAILER_LEN];
        let got = read_full(&mut self.inner, &mut trailer).map_err(|source| DecodeError::Io {
            frame: index,
            source,
        })?;
        if got < FRAME_TRAILER_LEN {
            return Err(DecodeError::Truncated {
                frame: index,
                kind: Some(kind),
            });
        }
        let stored = u32::from_le_bytes(trailer);
        let payload = &self.buf[..len];
        let computed = crc32c::crc32c_append(crc32c::crc32c(&header), payload);
        if stored != computed {
            return Err(DecodeError::Checksum {
                frame: index,
                kind,
                stored,
                computed,
            });
        }
        self.next_index += 1;
        self.bytes += (FRAME_HEADER_LEN + FRAME_TRAILER_LEN + len) as u64;
        Ok(Some(Frame {
            index,
            kind,
            flags,
            payload,
        }))
    }

    /// Index the next frame will have (= frames read so far).
    pub fn frames_read(&self) -> u64 {
        self.next_index
    }

    /// Bytes of complete, verified frames read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    pub fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
