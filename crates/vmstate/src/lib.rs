//! Plain-data VM state and its one versioned, self-describing, checksummed
//! encoding, used by snapshot files and by the migration protocol.
//!
//! Layers, bottom up:
//! - [`frame`]: `kind | flags | reserved | len | payload | crc32c` frames over
//!   any `io::Read`/`io::Write` ([`FrameWriter`], [`FrameReader`]). Kinds
//!   0x00-0x3f are state records, 0x40-0xff belong to the `wire` crate.
//! - [`record`]: the state records (Header, Config, Pages, ZeroPages, State,
//!   End): how each is written and parsed.
//! - [`snapshot`]: a whole VM as Header, Config, Pages/ZeroPages..., State,
//!   End ([`write_snapshot`], [`SnapshotWriter`], [`read_snapshot`]).
//!
//! Beside them, [`resident_pages`] and [`file_data_pages`] tell which
//! pages of guest memory may hold data, so snapshots and migration skip the rest unread.
//!
//! docs/SNAPSHOT.md describes the format byte by byte.

mod error;
pub mod frame;
pub mod record;
mod resident;
pub mod snapshot;
mod state;
mod zero;

pub use error::{ConfigError, DecodeError, EncodeError, FrameKind, SinkError};
pub use frame::{Frame, FrameReader, FrameWriter, Kinds, MAX_PAYLOAD};
pub use record::{FORMAT_VERSION, MAGIC, MAX_PAGES_PER_RECORD, PAGE_SIZE, Record, Totals};
pub use resident::{file_data_pages, resident_pages};
pub use snapshot::{
    ReadLimits, SnapshotSink, SnapshotStats, SnapshotWriter, read_snapshot, read_snapshot_frames,
    read_snapshot_with_limits, write_snapshot,
};
pub use state::*;
pub use zero::is_zero_page;
