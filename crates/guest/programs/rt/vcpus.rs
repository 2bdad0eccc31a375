//! Starting the other vCPUs (APs) from ring 3 with INIT-SIPI-SIPI, and the
//! count of workload threads.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};

use super::clock::{now, spin, ticks};
use super::heap::alloc_slice;
use super::{MAX_CPUS, boot};

static NTHREADS: AtomicUsize = AtomicUsize::new(1);
pub(super) static GO: AtomicBool = AtomicBool::new(false);

/// Number of workload threads (one per running vCPU).
pub fn nthreads() -> usize {
    NTHREADS.load(Relaxed)
}

/// Prepares TSS, GDT slot and stacks for APs 1..MAX_CPUS, copies the
/// trampoline to 0x8000 and broadcasts INIT-SIPI-SIPI through the xAPIC.
pub(super) fn start_aps(expected: usize) {
    let tss = core::ptr::addr_of_mut!(boot::rt_tss) as *mut u8;
    let gdt = core::ptr::addr_of_mut!(boot::rt_gdt_tss) as *mut u64;
    let kstacks = core::ptr::addr_of_mut!(boot::rt_kstacks) as u64;
    unsafe { boot::rt_ap_limit.store(expected.min(MAX_CPUS) as u32, Release) };
    let ustacks = core::ptr::addr_of_mut!(boot::rt_ap_ustack) as *mut u64;
    for cpu in 1..expected.min(MAX_CPUS) {
        unsafe {
            let t = tss.add(cpu * 256);
            core::ptr::copy_nonoverlapping(tss, t, 233);
            core::ptr::write_unaligned(t.add(4) as *mut u64, kstacks + (cpu as u64 + 1) * 4096);
            let base = t as u64;
            let lo = (232u64)
                | ((base & 0xFF_FFFF) << 16)
                | (0x89u64 << 40)
                | (((base >> 24) & 0xFF) << 56);
            gdt.add(2 * cpu).write_volatile(lo);
            gdt.add(2 * cpu + 1).write_volatile(base >> 32);
            let stack = alloc_slice::<u8>(boot::USTACK, "a vCPU stack");
            ustacks
                .add(cpu)
                .write_volatile(stack.as_ptr() as u64 + boot::USTACK as u64 - 8);
        }
    }
    unsafe {
        let start = core::ptr::addr_of!(boot::rt_tramp_start);
        let len = core::ptr::addr_of!(boot::rt_tramp_end) as usize - start as usize;
        core::ptr::copy_nonoverlapping(start, boot::TRAMPOLINE as *mut u8, len);
    }
    let apic = 0xFEE0_0000usize;
    let reg = |off: usize| (apic + off) as *mut u32;
    unsafe {
        let svr = reg(0xF0).read_volatile();
        reg(0xF0).write_volatile(svr | 0x1FF);
        reg(0x310).write_volatile(0);
        reg(0x300).write_volatile(0x000C_4500); // INIT, all excluding self
    }
    // The TSC frequency is not known yet: wait at least 200 us (at up to 5 GHz).
    spin(1_000_000);
    let sipi = 0x000C_4600 | (boot::TRAMPOLINE as u32 >> 12);
    unsafe { reg(0x300).write_volatile(sipi) };
    let arrived = || unsafe { boot::rt_ap_arrived.load(Acquire) } as usize;
    // At least 1 ms, then a second SIPI for APs that missed the first.
    let t = now() + 5_000_000;
    while arrived() + 1 < expected && now() < t {
        core::hint::spin_loop();
    }
    if arrived() + 1 < expected {
        unsafe { reg(0x300).write_volatile(sipi) };
    }
}

/// Waits (bounded) for the APs, then fixes the thread count. APs arrive in
/// about a millisecond; the bound only matters on a host so loaded that a
/// vCPU thread waits long for a core, or for an AP that never answers.
pub(super) fn await_aps(expected: usize) -> usize {
    let deadline = now() + ticks(3_000_000_000);
    let arrived = || unsafe { boot::rt_ap_arrived.load(Acquire) } as usize;
    while arrived() + 1 < expected && now() < deadline {
        core::hint::spin_loop();
    }
    let n = (arrived() + 1).min(expected).min(MAX_CPUS);
    NTHREADS.store(n, Release);
    n
}
