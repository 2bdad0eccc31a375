//! Protocol messages (frame kinds 0x40-0xff) and their payload layouts.
//! All integers are little endian. Layouts are documented in docs/PROTOCOL.md.

use std::fmt;
use std::io::{Read, Write};

use vmstate::frame::{Frame, FrameReader, FrameWriter, Kinds};
use vmstate::record::{self, Record, ZeroRuns};
use vmstate::{VmConfig, VmState};

use crate::error::WireError;

/// Frame kinds of the protocol messages. 0x4d-0xff are free; 0x50-0x5f are
/// set aside for post-copy, several streams and compression (docs/PROTOCOL.md).
pub mod kind {
    pub const HELLO: u8 = 0x40;
    pub const WELCOME: u8 = 0x41;
    pub const VERSION_REFUSED: u8 = 0x42;
    pub const AUTH_PROOF: u8 = 0x43;
    pub const AUTH_OK: u8 = 0x44;
    pub const START: u8 = 0x45;
    pub const ACCEPT: u8 = 0x46;
    pub const ROUND_BEGIN: u8 = 0x47;
    pub const ROUND_END: u8 = 0x48;
    pub const READY: u8 = 0x49;
    pub const COMMIT: u8 = 0x4a;
    pub const RESUMED: u8 = 0x4b;
    pub const ABORT: u8 = 0x4c;
}

/// First bytes of every Hello: lets a destination tell a Ferry source from
/// anything else that connects, whatever its protocol version.
pub const HELLO_MAGIC: [u8; 8] = *b"FERRYMIG";
/// Length of nonces and HMAC-SHA256 proofs.
pub const NONCE_LEN: usize = 32;
/// Longest Abort / VersionRefused text accepted.
pub const MAX_TEXT: usize = 4096;
/// Largest CBOR-encoded VmConfig accepted in Start.
pub const MAX_CONFIG_LEN: usize = 64 * 1024;

const HELLO_LEN: usize = 56;
const WELCOME_LEN: usize = 80;

/// Optional protocol features, negotiated in Hello/Welcome as the
/// intersection of both sides' sets. Version 1 defines none that change the
/// stream; the bits below are reserved so peers of later versions can agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(pub u64);

impl Capabilities {
    pub const NONE: Capabilities = Capabilities(0);
    /// Destination may request pages (post-copy / hybrid). Reserved.
    pub const POSTCOPY: Capabilities = Capabilities(1 << 0);
    /// Page data may arrive on several TCP streams. Reserved.
    pub const MULTI_STREAM: Capabilities = Capabilities(1 << 1);
    /// Pages records may be compressed. Reserved.
    pub const COMPRESSION: Capabilities = Capabilities(1 << 2);
    /// What this implementation supports.
    pub const SUPPORTED: Capabilities = Capabilities(0);

    pub fn intersect(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0)
    }

    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Why a side aborts a migration; carried in Abort with a human-readable text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbortCode {
    /// The operator cancelled the migration.
    Cancelled,
    /// The peer did not prove it holds the migration secret.
    AuthFailed,
    /// No common protocol version.
    Version,
    /// The VM needs more memory than the destination allows.
    MemoryLimit,
    /// The VM configuration is invalid.
    InvalidConfig,
    /// The destination cannot create the VM (host resources).
    Resources,
    /// A message arrived out of order or malformed.
    Protocol,
    /// A frame failed its checksum or was not a frame at all.
    Corrupt,
    /// The destination could not load the VM state.
    Restore,
    /// The peer made no progress within the stall timeout.
    Timeout,
    /// The source VM failed (dirty log, pause, state capture).
    SourceVm,
    /// Anything else.
    Internal,
    /// A code this implementation does not know (from a newer peer).
    Unknown(u16),
}

impl AbortCode {
    pub fn to_u16(self) -> u16 {
        match self {
            AbortCode::Cancelled => 1,
            AbortCode::AuthFailed => 2,
            AbortCode::Version => 3,
            AbortCode::MemoryLimit => 4,
            AbortCode::InvalidConfig => 5,
            AbortCode::Resources => 6,
            AbortCode::Protocol => 7,
            AbortCode::Corrupt => 8,
            AbortCode::Restore => 9,
            AbortCode::Timeout => 10,
            AbortCode::SourceVm => 11,
            AbortCode::Internal => 12,
            AbortCode::Unknown(c) => c,
        }
    }

    pub fn from_u16(c: u16) -> AbortCode {
        match c {
            1 => AbortCode::Cancelled,
            2 => AbortCode::AuthFailed,
            3 => AbortCode::Version,
            4 => AbortCode::MemoryLimit,
            5 => AbortCode::InvalidConfig,
            6 => AbortCode::Resources,
            7 => AbortCode::Protocol,
            8 => AbortCode::Corrupt,
            9 => AbortCode::Restore,
            10 => AbortCode::Timeout,
            11 => AbortCode::SourceVm,
            12 => AbortCode::Internal,
            c => AbortCode::Unknown(c),
        }
    }
}

impl fmt::Display for AbortCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            AbortCode::Cancelled => "cancelled",
            AbortCode::AuthFailed => "authentication failed",
            AbortCode::Version => "version mismatch",
            AbortCode::MemoryLimit => "memory limit",
            AbortCode::InvalidConfig => "invalid configuration",
            AbortCode::Resources => "out of resources",
            AbortCode::Protocol => "protocol error",
            AbortCode::Corrupt => "corrupt stream",
            AbortCode::Restore => "restore failed",
            AbortCode::Timeout => "timeout",
            AbortCode::SourceVm => "source VM error",
            AbortCode::Internal => "internal error",
            AbortCode::Unknown(c) => return write!(f, "code {c}"),
        };
        f.write_str(s)
    }
}

/// Source -> destination, first frame of every connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub min_version: u16,
    pub max_version: u16,
    pub capabilities: Capabilities,
    pub nonce: [u8; NONCE_LEN],
}

/// Destination -> source: the chosen version and the destination's proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    pub version: u16,
    pub capabilities: Capabilities,
    pub nonce: [u8; NONCE_LEN],
    pub proof: [u8; NONCE_LEN],
}

/// Source -> destination: the VM to be migrated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    /// Random id of this migration attempt (echoed in Commit).
    pub migration_id: u64,
    /// Guest page size the source tracks and sends (4096).
    pub page_size: u32,
    /// [`Start::PAUSED`], or 0.
    pub flags: u32,
    pub config: VmConfig,
}

impl Start {
    /// The VM was paused on the source when the migration began: the
    /// destination leaves it paused after Commit.
    pub const PAUSED: u32 = 1;
    /// Every flag this version knows; a Start with others is refused.
    pub const KNOWN_FLAGS: u32 = Self::PAUSED;
}

/// Start of a round of page data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundBegin {
    /// 1-based; the stop-and-copy round has [`RoundBegin::FINAL`] set.
    pub round: u32,
    pub flags: u32,
    /// Pages the source plans to examine this round (informational).
    pub pages: u64,
}

impl RoundBegin {
    /// The VM is paused on the source: this is the last round.
    pub const FINAL: u32 = 1;

    pub fn is_final(&self) -> bool {
        self.flags & Self::FINAL != 0
    }
}

/// End of a round of page data, with what the source sent in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundEnd {
    pub round: u32,
    /// Pages sent as data in Pages records this round.
    pub pages: u64,
    /// Pages announced zero in ZeroPages records this round.
    pub zero_pages: u64,
}

/// Destination -> source after Commit: the VM runs on the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resumed {
    /// Time from reading Commit to the vCPUs running, in ns (destination clock).
    pub commit_to_resume_ns: u64,
    /// Wall-clock time of the resume, ns since the Unix epoch (destination clock).
    pub resumed_unix_ns: u64,
}

/// Either direction, before Commit: the migration is off; the VM stays on the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Abort {
    pub code: AbortCode,
    pub message: String,
}

/// One decoded message. Page data borrows from the reader's buffer.
#[derive(Debug)]
pub enum Message<'a> {
    Hello(Hello),
    Welcome(Welcome),
    /// The destination speaks none of the offered versions: its own range.
    VersionRefused {
        min_version: u16,
        max_version: u16,
    },
    AuthProof([u8; NONCE_LEN]),
    AuthOk,
    Start(Box<Start>),
    Accept,
    RoundBegin(RoundBegin),
    RoundEnd(RoundEnd),
    /// vmstate Pages record: whole pages starting at `gpa`.
    Pages {
        gpa: u64,
        data: &'a [u8],
    },
    /// vmstate ZeroPages record: runs of pages that are all zero.
    ZeroPages(ZeroRuns<'a>),
    /// vmstate State record: vCPU and device state.
    State(Box<VmState>),
    Ready,
    Commit {
        migration_id: u64,
    },
    Resumed(Resumed),
    Abort(Abort),
}

impl Message<'_> {
    /// Short name for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Welcome(_) => "Welcome",
            Message::VersionRefused { .. } => "VersionRefused",
            Message::AuthProof(_) => "AuthProof",
            Message::AuthOk => "AuthOk",
            Message::Start(_) => "Start",
            Message::Accept => "Accept",
            Message::RoundBegin(_) => "RoundBegin",
            Message::RoundEnd(_) => "RoundEnd",
            Message::Pages { .. } => "Pages",
            Message::ZeroPages(_) => "ZeroPages",
            Message::State(_) => "State",
            Message::Ready => "Ready",
            Message::Commit { .. } => "Commit",
            Message::Resumed(_) => "Resumed",
            Message::Abort(_) => "Abort",
        }
    }
}

/// The frame kinds a protocol reader accepts: the protocol messages plus
/// the Pages, ZeroPages and State records.
pub fn protocol_kinds() -> Kinds {
    Kinds::empty()
        .with(record::kind::PAGES, "Pages")
        .with(record::kind::ZERO_PAGES, "ZeroPages")
        .with(record::kind::STATE, "State")
        .with(kind::HELLO, "Hello")
        .with(kind::WELCOME, "Welcome")
        .with(kind::VERSION_REFUSED, "VersionRefused")
        .with(kind::AUTH_PROOF, "AuthProof")
        .with(kind::AUTH_OK, "AuthOk")
        .with(kind::START, "Start")
        .with(kind::ACCEPT, "Accept")
        .with(kind::ROUND_BEGIN, "RoundBegin")
        .with(kind::ROUND_END, "RoundEnd")
        .with(kind::READY, "Ready")
        .with(kind::COMMIT, "Commit")
        .with(kind::RESUMED, "Resumed")
        .with(kind::ABORT, "Abort")
}

/// Little-endian cursor over a payload; every read checks the length.
struct Cursor<'a> {
    p: &'a [u8],
    kind: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.p.len() < n {
            return Err(WireError::Malformed {
                kind: self.kind,
                what: format!("payload too short ({} bytes left, need {n})", self.p.len()),
            });
        }
        let (a, b) = self.p.split_at(n);
        self.p = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn array(&mut self) -> Result<[u8; NONCE_LEN], WireError> {
        Ok(self.take(NONCE_LEN)?.try_into().expect("32"))
    }
    /// The payload must be fully consumed.
    fn end(&self) -> Result<(), WireError> {
        if self.p.is_empty() {
            Ok(())
        } else {
            Err(WireError::Malformed {
                kind: self.kind,
                what: format!("{} unexpected trailing bytes", self.p.len()),
            })
        }
    }
    fn text(&mut self) -> Result<String, WireError> {
        let rest = std::mem::take(&mut self.p);
        if rest.len() > MAX_TEXT {
            return Err(WireError::Malformed {
                kind: self.kind,
                what: format!("text of {} bytes exceeds {MAX_TEXT}", rest.len()),
            });
        }
        String::from_utf8(rest.to_vec()).map_err(|_| WireError::Malformed {
            kind: self.kind,
            what: "text is not UTF-8".into(),
        })
    }
}

/// Cuts `s` to at most [`MAX_TEXT`] bytes at a character boundary.
fn clip(s: &str) -> &str {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl<'a> Message<'a> {
    /// Decodes a verified frame.
    pub fn decode(frame: &Frame<'a>) -> Result<Message<'a>, WireError> {
        let k = frame.kind.kind;
        if k < record::kind::PROTOCOL_MIN {
            return Ok(match Record::parse(frame)? {
                Record::Pages { gpa, data } => Message::Pages { gpa, data },
                Record::ZeroPages(runs) => Message::ZeroPages(runs),
                Record::State(s) => Message::State(s),
                _ => {
                    return Err(WireError::Unexpected {
                        got: "a snapshot-only record",
                        expected: "a migration message",
                    });
                }
            });
        }
        let name = frame.kind.name.unwrap_or("unknown message");
        if frame.flags != 0 {
            return Err(WireError::Malformed {
                kind: name,
                what: format!("unknown flags {:#04x}", frame.flags),
            });
        }
        let mut c = Cursor {
            p: frame.payload,
            kind: name,
        };
        let msg = match k {
            kind::HELLO => {
                let magic = c.take(8)?;
                if magic != HELLO_MAGIC {
                    return Err(WireError::NotFerry);
                }
                let min_version = c.u16()?;
                let max_version = c.u16()?;
                let _reserved = c.u32()?;
                let capabilities = Capabilities(c.u64()?);
                let nonce = c.array()?;
                // Later versions may append fields: Hello must stay readable by all.
                if min_version > max_version {
                    return Err(WireError::Malformed {
                        kind: name,
                        what: format!("version range {min_version}..={max_version} is empty"),
                    });
                }
                return Ok(Message::Hello(Hello {
                    min_version,
                    max_version,
                    capabilities,
                    nonce,
                }));
            }
            kind::WELCOME => {
                let version = c.u16()?;
                let _reserved = c.take(6)?;
                let capabilities = Capabilities(c.u64()?);
                let nonce = c.array()?;
                let proof = c.array()?;
                Message::Welcome(Welcome {
                    version,
                    capabilities,
                    nonce,
                    proof,
                })
            }
            kind::VERSION_REFUSED => {
                let min_version = c.u16()?;
                let max_version = c.u16()?;
                // Any text after the range is informational and ignored.
                return Ok(Message::VersionRefused {
                    min_version,
                    max_version,
                });
            }
            kind::AUTH_PROOF => Message::AuthProof(c.array()?),
            kind::AUTH_OK => Message::AuthOk,
            kind::START => {
                let migration_id = c.u64()?;
                let page_size = c.u32()?;
                let flags = c.u32()?;
                let cbor = std::mem::take(&mut c.p);
                if cbor.len() > MAX_CONFIG_LEN {
                    return Err(WireError::Malformed {
                        kind: name,
                        what: format!("config of {} bytes exceeds {MAX_CONFIG_LEN}", cbor.len()),
                    });
                }
                let mut rest = cbor;
                let config: VmConfig =
                    ciborium::from_reader(&mut rest).map_err(|e| WireError::Malformed {
                        kind: name,
                        what: format!("invalid CBOR config: {e}"),
                    })?;
                if !rest.is_empty() {
                    return Err(WireError::Malformed {
                        kind: name,
                        what: format!("{} bytes after the config", rest.len()),
                    });
                }
                Message::Start(Box::new(Start {
                    migration_id,
                    page_size,
                    flags,
                    config,
                }))
            }
            kind::ACCEPT => {
                let _reserved = c.u64()?;
                Message::Accept
            }
            kind::ROUND_BEGIN => Message::RoundBegin(RoundBegin {
                round: c.u32()?,
                flags: c.u32()?,
                pages: c.u64()?,
            }),
            kind::ROUND_END => {
                let round = c.u32()?;
                let _reserved = c.u32()?;
                Message::RoundEnd(RoundEnd {
                    round,
                    pages: c.u64()?,
                    zero_pages: c.u64()?,
                })
            }
            kind::READY => Message::Ready,
            kind::COMMIT => Message::Commit {
                migration_id: c.u64()?,
            },
            kind::RESUMED => Message::Resumed(Resumed {
                commit_to_resume_ns: c.u64()?,
                resumed_unix_ns: c.u64()?,
            }),
            kind::ABORT => {
                let code = AbortCode::from_u16(c.u16()?);
                let _reserved = c.u16()?;
                let message = c.text()?;
                Message::Abort(Abort { code, message })
            }
            _ => {
                return Err(WireError::Malformed {
                    kind: name,
                    what: format!("kind {k:#04x} is not a message of this protocol version"),
                });
            }
        };
        c.end()?;
        Ok(msg)
    }
}

/// Writes protocol messages and page records as frames.
#[derive(Debug)]
pub struct MessageWriter<W: Write> {
    inner: FrameWriter<W>,
}

impl<W: Write> MessageWriter<W> {
    pub fn new(inner: W) -> Self {
        MessageWriter {
            inner: FrameWriter::new(inner),
        }
    }

    fn frame(&mut self, kind: u8, parts: &[&[u8]]) -> Result<(), WireError> {
        Ok(self.inner.write_frame(kind, 0, parts)?)
    }

    pub fn hello(&mut self, h: &Hello) -> Result<(), WireError> {
        let mut p = [0u8; HELLO_LEN];
        p[..8].copy_from_slice(&HELLO_MAGIC);
        p[8..10].copy_from_slice(&h.min_version.to_le_bytes());
        p[10..12].copy_from_slice(&h.max_version.to_le_bytes());
        p[16..24].copy_from_slice(&h.capabilities.0.to_le_bytes());
        p[24..56].copy_from_slice(&h.nonce);
        self.frame(kind::HELLO, &[&p])
    }

    pub fn welcome(&mut self, w: &Welcome) -> Result<(), WireError> {
        let mut p = [0u8; WELCOME_LEN];
        p[..2].copy_from_slice(&w.version.to_le_bytes());
        p[8..16].copy_from_slice(&w.capabilities.0.to_le_bytes());
        p[16..48].copy_from_slice(&w.nonce);
        p[48..80].copy_from_slice(&w.proof);
        self.frame(kind::WELCOME, &[&p])
    }

    pub fn version_refused(&mut self, min_version: u16, max_version: u16) -> Result<(), WireError> {
        let mut p = [0u8; 4];
        p[..2].copy_from_slice(&min_version.to_le_bytes());
        p[2..].copy_from_slice(&max_version.to_le_bytes());
        self.frame(kind::VERSION_REFUSED, &[&p])
    }

    pub fn auth_proof(&mut self, proof: &[u8; NONCE_LEN]) -> Result<(), WireError> {
        self.frame(kind::AUTH_PROOF, &[proof])
    }

    pub fn auth_ok(&mut self) -> Result<(), WireError> {
        self.frame(kind::AUTH_OK, &[])
    }

    pub fn start(&mut self, s: &Start) -> Result<(), WireError> {
        s.config.validate().map_err(vmstate::EncodeError::from)?;
        let mut head = [0u8; 16];
        head[..8].copy_from_slice(&s.migration_id.to_le_bytes());
        head[8..12].copy_from_slice(&s.page_size.to_le_bytes());
        head[12..16].copy_from_slice(&s.flags.to_le_bytes());
        let mut cbor = Vec::with_capacity(256);
        ciborium::into_writer(&s.config, &mut cbor).map_err(|e| {
            WireError::Encode(vmstate::EncodeError::Cbor {
                what: "VM config",
                msg: e.to_string(),
            })
        })?;
        self.frame(kind::START, &[&head, &cbor])
    }

    pub fn accept(&mut self) -> Result<(), WireError> {
        self.frame(kind::ACCEPT, &[&[0u8; 8]])
    }

    pub fn round_begin(&mut self, r: &RoundBegin) -> Result<(), WireError> {
        let mut p = [0u8; 16];
        p[..4].copy_from_slice(&r.round.to_le_bytes());
        p[4..8].copy_from_slice(&r.flags.to_le_bytes());
        p[8..].copy_from_slice(&r.pages.to_le_bytes());
        self.frame(kind::ROUND_BEGIN, &[&p])
    }

    pub fn round_end(&mut self, r: &RoundEnd) -> Result<(), WireError> {
        let mut p = [0u8; 24];
        p[..4].copy_from_slice(&r.round.to_le_bytes());
        p[8..16].copy_from_slice(&r.pages.to_le_bytes());
        p[16..].copy_from_slice(&r.zero_pages.to_le_bytes());
        self.frame(kind::ROUND_END, &[&p])
    }

    /// A Pages record: 1 to 256 whole pages at page-aligned `gpa`, written without a copy.
    pub fn pages(&mut self, gpa: u64, data: &[u8]) -> Result<(), WireError> {
        Ok(record::write_pages(&mut self.inner, gpa, data)?)
    }

    /// A ZeroPages record of (gpa, page count) runs.
    pub fn zero_pages(&mut self, runs: &[(u64, u64)]) -> Result<(), WireError> {
        Ok(record::write_zero_pages(&mut self.inner, runs)?)
    }

    /// The State record.
    pub fn state(&mut self, state: &VmState) -> Result<(), WireError> {
        Ok(record::write_state(&mut self.inner, state)?)
    }

    pub fn ready(&mut self) -> Result<(), WireError> {
        self.frame(kind::READY, &[])
    }

    pub fn commit(&mut self, migration_id: u64) -> Result<(), WireError> {
        self.frame(kind::COMMIT, &[&migration_id.to_le_bytes()])
    }

    pub fn resumed(&mut self, r: &Resumed) -> Result<(), WireError> {
        let mut p = [0u8; 16];
        p[..8].copy_from_slice(&r.commit_to_resume_ns.to_le_bytes());
        p[8..].copy_from_slice(&r.resumed_unix_ns.to_le_bytes());
        self.frame(kind::RESUMED, &[&p])
    }

    pub fn abort(&mut self, code: AbortCode, message: &str) -> Result<(), WireError> {
        let mut head = [0u8; 4];
        head[..2].copy_from_slice(&code.to_u16().to_le_bytes());
        self.frame(kind::ABORT, &[&head, clip(message).as_bytes()])
    }

    /// Flushes the underlying writer (the frame layer itself does not buffer).
    pub fn flush(&mut self) -> Result<(), WireError> {
        Ok(self.inner.flush()?)
    }

    /// Bytes written so far, framing included.
    pub fn bytes_written(&self) -> u64 {
        self.inner.bytes_written()
    }

    pub fn get_ref(&self) -> &W {
        self.inner.get_ref()
    }

    pub fn get_mut(&mut self) -> &mut W {
        self.inner.get_mut()
    }
}

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
}
