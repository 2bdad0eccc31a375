//! Errors of the encoding. Every decode error names the frame (0-based index
//! in the stream) and its kind, so a user can tell what is wrong and where.

use std::fmt;
use std::io;

/// Error a [`crate::SnapshotSink`] returns to refuse what the stream carries
/// (for example memory it cannot provide). Reported as [`DecodeError::Refused`].
pub type SinkError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A frame kind together with its name when the reader knows it, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameKind {
    pub kind: u8,
    pub name: Option<&'static str>,
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name {
            Some(name) => f.write_str(name),
            None => write!(f, "kind {:#04x}", self.kind),
        }
    }
}

/// Why a [`crate::VmConfig`] cannot describe a machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("a VM needs at least one vCPU")]
    NoVcpus,
    #[error("{vcpus} vCPUs is more than the {max} allowed")]
    TooManyVcpus { vcpus: u32, max: u32 },
    #[error("no guest memory regions")]
    NoRegions,
    #[error("memory region {index} ({start:#x}, {len:#x} bytes) is empty or not 4 KiB aligned")]
    BadRegion { index: usize, start: u64, len: u64 },
    #[error(
        "memory region {index} ({start:#x}, {len:#x} bytes) overlaps or precedes the one before it"
    )]
    RegionOrder { index: usize, start: u64, len: u64 },
    #[error("memory regions total {regions} bytes but memory_bytes is {memory_bytes}")]
    SizeMismatch { regions: u64, memory_bytes: u64 },
}

/// Errors while writing frames or a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("write failed: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {kind}: payload of {len} bytes exceeds the maximum {max}")]
    PayloadTooLarge { kind: FrameKind, len: u64, max: u32 },
    #[error("invalid VM configuration: {0}")]
    InvalidConfig(#[from] ConfigError),
    #[error("page run at {gpa:#x} of {len} bytes is not whole, aligned 4 KiB pages")]
    Unaligned { gpa: u64, len: u64 },
    #[error("pages {gpa:#x}..{end:#x} lie outside guest memory", end = gpa.saturating_add(*len))]
    OutsideMemory { gpa: u64, len: u64 },
    #[error("{what}: {len} exceeds the maximum {max} per record")]
    TooMany {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("VmState has version {found}, this Ferry writes {supported}")]
    StateVersion { found: u32, supported: u32 },
    #[error("VmState's config differs from the config the snapshot was started with")]
    ConfigMismatch,
    #[error("cannot encode {what} as CBOR: {msg}")]
    Cbor { what: &'static str, msg: String },
}

/// Errors while reading frames or a snapshot. Display names exactly what is
/// wrong, e.g. `frame 12 (pages): checksum mismatch ...`.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("read failed in frame {frame}: {source}")]
    Io {
        frame: u64,
        #[source]
        source: io::Error,
    },
    #[error("truncated: stream ended inside frame {frame}{}", kind_suffix(kind))]
    Truncated { frame: u64, kind: Option<FrameKind> },
    #[error("truncated: stream ended before frame {frame}, without an End record")]
    MissingEnd { frame: u64 },
    #[error(
        "frame {frame} ({kind}): checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Checksum {
        frame: u64,
        kind: FrameKind,
        stored: u32,
        computed: u32,
    },
    #[error("frame {frame} ({kind}): payload length {len} exceeds the maximum {max}")]
    Oversize {
        frame: u64,
        kind: FrameKind,
        len: u32,
        max: u32,
    },
    #[error("frame {frame}: unknown kind {kind:#04x}")]
    UnknownKind { frame: u64, kind: u8 },
    #[error("frame {frame} ({kind}): reserved header field is {reserved:#06x}, must be 0")]
    Reserved {
        frame: u64,
        kind: FrameKind,
        reserved: u16,
    },
    #[error("frame {frame} ({kind}): unknown flags {flags:#04x}")]
    Flags {
        frame: u64,
        kind: FrameKind,
        flags: u8,
    },
    #[error("not a Ferry state stream: {0}")]
    NotFerry(String),
    #[error("unsupported format version {found} (this Ferry reads {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("unsupported VM state version {found} (this Ferry reads {supported})")]
    UnsupportedStateVersion { found: u32, supported: u32 },
    #[error("frame {frame} ({kind}): malformed: {what}")]
    Malformed {
        frame: u64,
        kind: FrameKind,
        what: String,
    },
    #[error("frame {frame} ({kind}): not expected here, expected {expected}")]
    Unexpected {
        frame: u64,
        kind: FrameKind,
        expected: &'static str,
    },
    #[error("frame {frame} (config): invalid VM configuration: {source}")]
    InvalidConfig {
        frame: u64,
        #[source]
        source: ConfigError,
    },
    #[error(
        "frame {frame} (config): the stream announces {announced} bytes of guest memory, more than the {max} allowed"
    )]
    TooMuchMemory {
        frame: u64,
        announced: u64,
        max: u64,
    },
    #[error("frame {frame} ({kind}): pages {gpa:#x}..{end:#x} lie outside guest memory", end = gpa.saturating_add(*len))]
    OutsideMemory {
        frame: u64,
        kind: FrameKind,
        gpa: u64,
        len: u64,
    },
    #[error("frame {frame} (end): {what}: End announces {announced}, the stream carried {seen}")]
    TotalsMismatch {
        frame: u64,
        what: &'static str,
        announced: u64,
        seen: u64,
    },
    #[error("frame {frame} ({kind}): refused by the destination: {source}")]
    Refused {
        frame: u64,
        kind: FrameKind,
        #[source]
        source: SinkError,
    },
    #[error("trailing data after the End record (frame {frame})")]
    TrailingData { frame: u64 },
}

fn kind_suffix(kind: &Option<FrameKind>) -> String {
    match kind {
        Some(k) => format!(" ({k})"),
        None => String::new(),
    }
}
