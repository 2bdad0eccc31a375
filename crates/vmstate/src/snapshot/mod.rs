//! A whole VM as one record stream: Header, Config, Pages/ZeroPages...,
//! State, End. Written to and read from any `io::Write` / `io::Read`.

mod read;
mod write;

pub use read::{
    ReadLimits, SnapshotSink, read_snapshot, read_snapshot_frames, read_snapshot_with_limits,
};
pub use write::{SnapshotWriter, write_snapshot};

/// Buffer between the encoder and the underlying writer or reader. Page
/// data (up to 1 MiB per record) is larger and bypasses it.
const IO_BUFFER: usize = 128 << 10;

/// What a snapshot stream contained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Frames in the stream, End included.
    pub frames: u64,
    /// Pages carried as data.
    pub pages: u64,
    /// Pages announced zero by ZeroPages records.
    pub zero_pages: u64,
    /// Bytes of the whole stream.
    pub bytes: u64,
}
