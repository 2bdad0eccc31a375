//! Where each field of the guest status page lies: byte offsets,
//! little-endian u64 unless noted (the table is in docs/GUESTS.md). The
//! guest writes by these and the host reads by them.

/// Guest-physical address of the status page.
pub const GPA: u64 = 0x6000;
/// Size of the status page (the guest reserves the whole page).
pub const PAGE_SIZE: usize = 4096;
/// Bytes of the header (the seqlock-protected counters) in use.
pub const LEN: usize = TSC_KHZ + 8;
/// First eight bytes of a valid page.
pub const MAGIC: [u8; 8] = *b"FERRYST1";
/// The layout version the guest writes and the host reads.
pub const VERSION: u32 = 2;

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
/// The guest's TSC frequency in kHz (written once, at boot).
pub const TSC_KHZ: usize = WORKLOAD + WORKLOAD_LEN;

// Per-vCPU progress slots: outside the seqlock, one cache line each, each
// field written by its vCPU alone with one plain store (no VM exit), so a
// reader takes single words and never waits.

/// Offset of vCPU 0's slot.
pub const SLOTS: usize = 256;
/// Bytes between two vCPUs' slots (a cache line).
pub const SLOT_SIZE: usize = 64;
/// Slots on the page (the guests' vCPU limit).
pub const MAX_SLOTS: usize = 16;
/// In a slot: passes of the vCPU's main loop so far, +1 on every pass.
pub const SLOT_PASSES: usize = 0;
/// In a slot: the TSC of the latest pass.
pub const SLOT_PASS_TSC: usize = 8;
/// In a slot: the latest long gap between two passes, as
/// `(count << LONG_GAP_BITS) | ticks`: `count` long gaps so far, the last
/// one `ticks` TSC ticks long (capped at `2^LONG_GAP_BITS - 1`).
pub const SLOT_LONG_GAP: usize = 16;
/// Bits of [`SLOT_LONG_GAP`] holding the gap's ticks.
pub const LONG_GAP_BITS: u32 = 40;
/// A gap between two passes is long from this many microseconds on.
pub const LONG_GAP_US: u64 = 100;
const _: () = assert!(LEN <= SLOTS);
const _: () = assert!(SLOTS + MAX_SLOTS * SLOT_SIZE <= PAGE_SIZE);
