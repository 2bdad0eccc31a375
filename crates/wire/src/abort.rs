//! Why a migration was called off: the Abort message's code and text.

use std::fmt;

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

/// Either direction, before Commit: the migration is off; the VM stays on the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Abort {
    pub code: AbortCode,
    pub message: String,
}
