//! Errors of a migration, on either side.

use std::fmt;
use std::time::Duration;

use thiserror::Error;
use wire::{AbortCode, Message, WireError};

use crate::bitmap::LayoutError;
use crate::convergence::LimitReached;
use crate::progress::PostcopyRefused;
use crate::vm::VmError;

/// Why a migration failed. Display is one line naming the problem.
#[derive(Debug, Error)]
pub enum MigrateError {
    #[error("cannot resolve destination address '{addr}': {source}")]
    Resolve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} did not answer within {timeout:?}")]
    ConnectTimeout { addr: String, timeout: Duration },
    /// Mutual TLS with the destination failed (its certificate is not the
    /// cluster's, or it refused ours): nothing of the VM was sent.
    #[error("no TLS session with {addr}: {source}")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error(
        "no source authenticated within {}; peers refused meanwhile: {refused} (see the log)",
        units::format_duration(*waited)
    )]
    AcceptTimeout { waited: Duration, refused: u64 },
    #[error("the peer made no progress for {timeout:?} while {during}")]
    Stalled {
        during: &'static str,
        timeout: Duration,
    },
    #[error("the connection to the peer was lost while {during}: {source}")]
    ConnectionLost {
        during: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the destination refused the migration ({code}): {message}")]
    Refused { code: AbortCode, message: String },
    #[error(
        "the post-copy link broke ({first}) and was not restored within {timeout:?} (--recovery-timeout)"
    )]
    NotRecovered {
        first: Box<MigrateError>,
        timeout: Duration,
    },
    #[error("the peer aborted the migration ({code}): {message}")]
    PeerAborted { code: AbortCode, message: String },
    #[error("cannot keep the post-copy recovery record: {0}")]
    Journal(String),
    #[error("cancelled")]
    Cancelled,
    /// Pre-copy reached its limit before the strategy's criterion was met,
    /// and the operator asked to abort rather than force the switchover.
    #[error(
        "pre-copy did not converge within the {limit} ({detail}); rolled back as --on-timeout abort asks"
    )]
    NotConverged {
        limit: LimitReached,
        /// The limit's value: "5 rounds", "10s".
        detail: String,
    },
    /// The strategy or the operator asked for post-copy and the destination
    /// cannot do it: refused at Setup, before anything was sent.
    #[error("{0}")]
    PostcopyUnavailable(#[from] PostcopyRefused),
    #[error("VM {op} failed: {source}")]
    Vm {
        op: VmOp,
        #[source]
        source: VmError,
    },
    #[error("guest memory layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("guest memory access at {gpa:#x} failed: {source}")]
    Memory {
        gpa: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error(
        "the VM has {} of memory, more than this destination allows ({}, --max-memory)", units::format_bytes(*announced), units::format_bytes(*max)
    )]
    MemoryLimit { announced: u64, max: u64 },
    #[error("invalid VM configuration: {0}")]
    InvalidConfig(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the source VM could not be resumed after a failed migration ({first}): {source}")]
    ResumeFailed {
        first: Box<MigrateError>,
        #[source]
        source: VmError,
    },
}

/// The VM operation that failed, in [`MigrateError::Vm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmOp {
    /// Source: [`SourceVm::start_dirty_log`](crate::SourceVm::start_dirty_log).
    StartDirtyLog,
    /// Source: [`SourceVm::harvest_dirty`](crate::SourceVm::harvest_dirty).
    HarvestDirty,
    /// Source: [`SourceVm::throttle`](crate::SourceVm::throttle).
    Throttle,
    /// Source: [`SourceVm::pause`](crate::SourceVm::pause).
    Pause,
    /// Source: [`SourceVm::save_state`](crate::SourceVm::save_state).
    SaveState,
    /// Destination: [`VmFactory::create`](crate::VmFactory::create).
    Create,
    /// Destination: [`DestinationVm::restore_state`](crate::DestinationVm::restore_state).
    RestoreState,
    /// Destination: [`DestinationVm::resume`](crate::DestinationVm::resume), after Commit.
    Resume,
    /// Destination: [`DestinationVm::start_postcopy`](crate::DestinationVm::start_postcopy).
    StartPostcopy,
    /// Destination: [`DestinationVm::discard_stale`](crate::DestinationVm::discard_stale).
    DiscardStale,
    /// Destination: a [`PostcopyMemory`](crate::PostcopyMemory) operation (fault, install, finish).
    PostcopyMemory,
    /// Destination: a [`Fence`](crate::Fence) operation (lease lapsed or renewed).
    Fence,
    /// A post-copy transaction's capture, or taking the VM back from one.
    Transaction,
}

impl fmt::Display for VmOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmOp::StartDirtyLog => "start dirty logging",
            VmOp::HarvestDirty => "harvest dirty pages",
            VmOp::Throttle => "throttle vCPUs",
            VmOp::Pause => "pause",
            VmOp::SaveState => "save state",
            VmOp::Create => "create",
            VmOp::RestoreState => "restore",
            VmOp::Resume => "resume after Commit",
            VmOp::StartPostcopy => "start post-copy",
            VmOp::DiscardStale => "discard stale pages",
            VmOp::PostcopyMemory => "post-copy memory",
            VmOp::Fence => "fence (post-copy lease)",
            VmOp::Transaction => "post-copy transaction",
        })
    }
}

impl MigrateError {
    /// The peer sent `m` where the protocol wants `expected`: its own
    /// Abort says why; anything else is a protocol error.
    pub(crate) fn unexpected(m: Message, expected: &str) -> MigrateError {
        match m {
            Message::Abort(a) => MigrateError::PeerAborted {
                code: a.code,
                message: a.message,
            },
            m => MigrateError::Protocol(format!("expected {expected}, got {}", m.name())),
        }
    }

    /// The Abort code to tell the peer about this error.
    pub fn abort_code(&self) -> AbortCode {
        match self {
            MigrateError::Cancelled
            | MigrateError::NotConverged { .. }
            | MigrateError::PostcopyUnavailable(_) => AbortCode::Cancelled,
            MigrateError::Stalled { .. } => AbortCode::Timeout,
            MigrateError::MemoryLimit { .. } => AbortCode::MemoryLimit,
            MigrateError::InvalidConfig(_) | MigrateError::Layout(_) => AbortCode::InvalidConfig,
            MigrateError::Protocol(_) => AbortCode::Protocol,
            MigrateError::Wire(e) if e.is_corrupt() => AbortCode::Corrupt,
            MigrateError::Wire(WireError::AuthFailed(_)) => AbortCode::AuthFailed,
            MigrateError::Wire(WireError::VersionMismatch { .. }) => AbortCode::Version,
            MigrateError::Wire(WireError::Unexpected { .. }) => AbortCode::Protocol,
            MigrateError::Vm { .. } | MigrateError::Memory { .. } => AbortCode::SourceVm,
            _ => AbortCode::Internal,
        }
    }

    /// The Abort code the destination sends for this error: a VM it cannot
    /// create is a resource problem, any other VM failure a failed restore.
    pub(crate) fn abort_code_dest(&self) -> AbortCode {
        match self {
            MigrateError::Vm {
                op: VmOp::Create, ..
            } => AbortCode::Resources,
            MigrateError::Vm { .. } => AbortCode::Restore,
            MigrateError::Memory { .. } => AbortCode::Internal,
            e => e.abort_code(),
        }
    }

    /// Whether the link itself failed (cut, reset, stalled, a frame cut
    /// short), as opposed to what a peer said or sent: in post-copy such a
    /// failure is survived by reconnecting.
    pub fn is_link_failure(&self) -> bool {
        use vmstate::DecodeError::{Io, Truncated};
        matches!(
            self,
            MigrateError::ConnectionLost { .. }
                | MigrateError::Stalled { .. }
                | MigrateError::Wire(
                    WireError::Closed { .. }
                        | WireError::Io(_)
                        | WireError::Decode(Io { .. } | Truncated { .. })
                )
        )
    }

    /// Whether the peer already knows (it told us, or the connection is gone),
    /// so sending it an Abort is pointless.
    pub(crate) fn peer_knows(&self) -> bool {
        matches!(
            self,
            MigrateError::PeerAborted { .. }
                | MigrateError::ConnectionLost { .. }
                | MigrateError::Refused { .. }
                | MigrateError::Stalled { .. }
                | MigrateError::NotRecovered { .. }
                | MigrateError::Wire(WireError::Closed { .. })
                | MigrateError::Wire(WireError::Io(_))
                | MigrateError::Wire(WireError::AuthFailed(_))
                | MigrateError::Wire(WireError::VersionMismatch { .. })
                | MigrateError::Wire(WireError::PeerAborted { .. })
        )
    }

    /// Maps socket timeouts to [`MigrateError::Stalled`] and peer aborts to
    /// [`MigrateError::PeerAborted`].
    pub(crate) fn from_wire(e: WireError, during: &'static str, timeout: Duration) -> MigrateError {
        if e.is_timeout() {
            return MigrateError::Stalled { during, timeout };
        }
        let lost = |k: std::io::ErrorKind| {
            use std::io::ErrorKind::*;
            matches!(
                k,
                BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected | UnexpectedEof
            )
        };
        match e {
            WireError::Io(source)
            | WireError::Encode(vmstate::EncodeError::Io(source))
            | WireError::Decode(vmstate::DecodeError::Io { source, .. })
                if lost(source.kind()) =>
            {
                MigrateError::ConnectionLost { during, source }
            }
            WireError::PeerAborted { code, message } => MigrateError::PeerAborted { code, message },
            e => MigrateError::Wire(e),
        }
    }
}
