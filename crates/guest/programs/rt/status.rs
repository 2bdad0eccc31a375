//! The status page that the VMM reads without VM exits (the layout is
//! shared with the host, in `common/status_layout.rs`).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

use super::verify::{VERIFY_FAILS, VERIFY_PASSES};

#[path = "../common/status_layout.rs"]
mod layout;

/// Latest latency percentiles, published by kvstore (ns).
pub static P50_NS: AtomicU64 = AtomicU64::new(0);
pub static P99_NS: AtomicU64 = AtomicU64::new(0);

/// The program counts operations (kvstore), not pages: its work goes in
/// the ops fields.
pub(super) static PROGRAM_IS_KV: AtomicBool = AtomicBool::new(false);

fn status_u64(off: usize, v: u64) {
    unsafe { core::ptr::write_volatile((layout::GPA as usize + off) as *mut u64, v) }
}

/// Clears the page and writes its header: magic, version, vCPUs, program name.
pub(super) fn status_init(name: &str, vcpus: u32) {
    unsafe { core::ptr::write_bytes(layout::GPA as *mut u8, 0, layout::PAGE_SIZE) };
    status_u64(0, u64::from_le_bytes(layout::MAGIC));
    status_u64(
        layout::VERSION_VCPUS,
        u64::from(layout::VERSION) | (u64::from(vcpus) << 32),
    );
    let mut n = [0u8; layout::WORKLOAD_LEN];
    let len = name.len().min(layout::WORKLOAD_LEN - 1);
    n[..len].copy_from_slice(&name.as_bytes()[..len]);
    status_u64(
        layout::WORKLOAD,
        u64::from_le_bytes(n[..8].try_into().unwrap()),
    );
    status_u64(
        layout::WORKLOAD + 8,
        u64::from_le_bytes(n[8..].try_into().unwrap()),
    );
}

/// Publishes heartbeat `seq` stamped `tsc` with the work done and its rate,
/// the verification counts and the latency percentiles, under the page's
/// seqlock (odd while it is being written).
pub(super) fn status_publish(seq: u64, tsc: u64, work: u64, rate: u64) {
    let s = unsafe { core::ptr::read_volatile((layout::GPA as usize + layout::SEQ) as *const u64) };
    status_u64(layout::SEQ, s + 1);
    core::sync::atomic::compiler_fence(Release);
    status_u64(layout::HEARTBEAT_SEQ, seq);
    status_u64(layout::HEARTBEAT_TSC, tsc);
    let (wo, ro) = if PROGRAM_IS_KV.load(Relaxed) {
        (layout::OPS, layout::OPS_PER_SEC)
    } else {
        (layout::PAGES_WRITTEN, layout::WRITE_RATE)
    };
    status_u64(wo, work);
    status_u64(ro, rate);
    status_u64(layout::VERIFY_PASSES, VERIFY_PASSES.load(Relaxed));
    status_u64(layout::VERIFY_FAILURES, VERIFY_FAILS.load(Relaxed));
    status_u64(layout::P50_NS, P50_NS.load(Relaxed));
    status_u64(layout::P99_NS, P99_NS.load(Relaxed));
    core::sync::atomic::compiler_fence(Release);
    status_u64(layout::SEQ, s + 2);
}
