//! Where each field of the guest status page lies: byte offsets,
//! little-endian u64 unless noted (the table is in docs/GUESTS.md). The
//! guest writes by these and the host reads by them.

/// Guest-physical address of the status page.
pub const GPA: u64 = 0x6000;
/// Size of the status page (the guest reserves the whole page).
pub const PAGE_SIZE: usize = 4096;
/// Bytes of the page in use.
pub const LEN: usize = WORKLOAD + WORKLOAD_LEN;
const _: () = assert!(LEN <= PAGE_SIZE);
/// First eight bytes of a valid page.
pub const MAGIC: [u8; 8] = *b"FERRYST1";
/// The layout version the guest writes and the host reads.
pub const VERSION: u32 = 1;

/// Seqlock sequence: odd while the guest writes the page.
pub const SEQ: usize = 8;
/// Layout version (low u32) and vCPUs in use (high u32).
pub const VERSION_VCPUS: usize = 16;
/// The last `HB` line's sequence number.
pub const HEARTBEAT_SEQ: usize = 24;
/// TSC of that heartbeat.
pub const HEARTBEAT_TSC: usize = 32;
/// Pages written in total (dirtier).
pub const PAGES_WRITTEN: usize = 40;
/// Pages written per second (dirtier).
pub const WRITE_RATE: usize = 48;
/// Verification rounds passed.
pub const VERIFY_PASSES: usize = 56;
/// Verification rounds failed.
pub const VERIFY_FAILURES: usize = 64;
/// Operations in total (kvstore).
pub const OPS: usize = 72;
/// Operations per second (kvstore).
pub const OPS_PER_SEC: usize = 80;
/// Median operation latency, ns (kvstore).
pub const P50_NS: usize = 88;
/// 99th percentile operation latency, ns (kvstore).
pub const P99_NS: usize = 96;
/// The workload's name, NUL padded.
pub const WORKLOAD: usize = 104;
/// Bytes of the workload's name field.
pub const WORKLOAD_LEN: usize = 16;
