//! The status page at 0x6000 that the VMM reads without VM exits (layout
//! in docs/GUESTS.md; the host side is `guest::status`).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

use super::verify::{VERIFY_FAILS, VERIFY_PASSES};

const STATUS: usize = 0x6000;
const STATUS_VERSION: u32 = 1;

/// Latest latency percentiles, published by kvstore (ns).
pub static P50_NS: AtomicU64 = AtomicU64::new(0);
pub static P99_NS: AtomicU64 = AtomicU64::new(0);

/// The program counts operations (kvstore), not pages: its work goes in
/// the ops fields.
pub(super) static PROGRAM_IS_KV: AtomicBool = AtomicBool::new(false);

fn status_u64(off: usize, v: u64) {
    unsafe { core::ptr::write_volatile((STATUS + off) as *mut u64, v) }
}

/// Clears the page and writes its header: magic, version, vCPUs, program name.
pub(super) fn status_init(name: &str, vcpus: u32) {
    unsafe { core::ptr::write_bytes(STATUS as *mut u8, 0, 4096) };
    status_u64(0, u64::from_le_bytes(*b"FERRYST1"));
    status_u64(16, u64::from(STATUS_VERSION) | (u64::from(vcpus) << 32));
    let mut n = [0u8; 16];
    let len = name.len().min(15);
    n[..len].copy_from_slice(&name.as_bytes()[..len]);
    status_u64(104, u64::from_le_bytes(n[..8].try_into().unwrap()));
    status_u64(112, u64::from_le_bytes(n[8..].try_into().unwrap()));
}

/// Publishes heartbeat `seq` stamped `tsc` with the work done and its rate,
/// the verification counts and the latency percentiles, under the page's
/// seqlock (odd while it is being written).
pub(super) fn status_publish(seq: u64, tsc: u64, work: u64, rate: u64) {
    let s = unsafe { core::ptr::read_volatile((STATUS + 8) as *const u64) };
    status_u64(8, s + 1);
    core::sync::atomic::compiler_fence(Release);
    status_u64(24, seq);
    status_u64(32, tsc);
    let (wo, ro) = if PROGRAM_IS_KV.load(Relaxed) {
        (72, 80)
    } else {
        (40, 48)
    };
    status_u64(wo, work);
    status_u64(ro, rate);
    status_u64(56, VERIFY_PASSES.load(Relaxed));
    status_u64(64, VERIFY_FAILS.load(Relaxed));
    status_u64(88, P50_NS.load(Relaxed));
    status_u64(96, P99_NS.load(Relaxed));
    core::sync::atomic::compiler_fence(Release);
    status_u64(8, s + 2);
}
