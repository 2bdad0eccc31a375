//! The status page that the VMM reads without VM exits (the layout is
//! shared with the host, in `common/status_layout.rs`): vCPU 0's counters
//! under a seqlock, and each vCPU's pass counter in a slot of its own.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

use super::MAX_CPUS;
use super::clock::{ticks, tsc_khz};
use super::verify::{VERIFY_FAILS, VERIFY_PASSES};

#[path = "../common/status_layout.rs"]
mod layout;

/// Latest latency percentiles, published by kvstore (ns).
pub static P50_NS: AtomicU64 = AtomicU64::new(0);
pub static P99_NS: AtomicU64 = AtomicU64::new(0);

/// The program counts operations (kvstore), not pages: its work goes in
/// the ops fields.
pub(super) static PROGRAM_IS_KV: AtomicBool = AtomicBool::new(false);

const _: () = assert!(MAX_CPUS <= layout::MAX_SLOTS);

/// A gap between two passes this long (TSC ticks) is recorded; set at boot.
static LONG_GAP_TICKS: AtomicU64 = AtomicU64::new(u64::MAX);

fn status_u64(off: usize, v: u64) {
    unsafe { core::ptr::write_volatile((layout::GPA as usize + off) as *mut u64, v) }
}

fn status_read(off: usize) -> u64 {
    unsafe { core::ptr::read_volatile((layout::GPA as usize + off) as *const u64) }
}

/// Counts one pass of `cpu`'s loop, made at TSC `t`, in the vCPU's slot: a
/// plain store the host can sample without a VM exit. A gap since the
/// previous pass of [`layout::LONG_GAP_US`] or more (the vCPU did not run:
/// the host descheduled or paused it, or the VM migrated) is recorded too.
#[inline(always)]
pub fn pass(cpu: usize, t: u64) {
    let slot = layout::SLOTS + cpu * layout::SLOT_SIZE;
    let last = status_read(slot + layout::SLOT_PASS_TSC);
    status_u64(
        slot + layout::SLOT_PASSES,
        status_read(slot + layout::SLOT_PASSES) + 1,
    );
    status_u64(slot + layout::SLOT_PASS_TSC, t);
    let gap = t.wrapping_sub(last);
    if gap >= LONG_GAP_TICKS.load(Relaxed) && last != 0 && gap < 1 << 63 {
        long_gap(slot, gap);
    }
}

#[cold]
#[inline(never)]
fn long_gap(slot: usize, gap: u64) {
    let bits = layout::LONG_GAP_BITS;
    let count = (status_read(slot + layout::SLOT_LONG_GAP) >> bits) + 1;
    let ticks = gap.min((1 << bits) - 1);
    status_u64(slot + layout::SLOT_LONG_GAP, (count << bits) | ticks);
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
    status_u64(layout::TSC_KHZ, tsc_khz());
    LONG_GAP_TICKS.store(ticks(layout::LONG_GAP_US * 1000).max(1), Relaxed);
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
