//! Time from the TSC: its frequency (the hypervisor's timing leaf, else a
//! measurement against the PIT) and conversions between ticks and nanoseconds.

use core::arch::x86_64::{__cpuid, _rdtsc};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::port::{inb, outb};
use super::{Global, boot};

/// TSC now.
#[inline(always)]
pub fn now() -> u64 {
    unsafe { _rdtsc() }
}

pub(super) static TSC_KHZ: AtomicU64 = AtomicU64::new(0);

/// TSC ticks per second.
#[inline]
pub fn tsc_hz() -> u64 {
    TSC_KHZ.load(Relaxed) * 1000
}
/// TSC frequency in kHz.
pub fn tsc_khz() -> u64 {
    TSC_KHZ.load(Relaxed)
}
/// TSC ticks in `ns` nanoseconds.
pub fn ticks(ns: u64) -> u64 {
    ((ns as u128 * TSC_KHZ.load(Relaxed) as u128) / 1_000_000) as u64
}
/// Nanoseconds in `t` TSC ticks.
pub(super) fn nanos(t: u64) -> u64 {
    ((t as u128 * 1_000_000) / TSC_KHZ.load(Relaxed).max(1) as u128) as u64
}

/// Spins for `t` ticks.
pub(super) fn spin(t: u64) {
    let end = now() + t;
    while now() < end {
        core::hint::spin_loop();
    }
}

/// Where the TSC frequency came from (for the READY line).
pub(super) static TSC_SOURCE: Global<&str> = Global::new("cpuid");

pub(super) fn tsc_init() -> u64 {
    // SAFETY: written once by the boot code before any thread started.
    let khz = unsafe { core::ptr::read_volatile(&raw const boot::rt_hv_tsc_khz) };
    if khz != 0 {
        return u64::from(khz);
    }
    let leaf1 = __cpuid(1);
    if leaf1.ecx & (1 << 31) != 0 {
        let hv = __cpuid(0x4000_0000);
        if hv.eax >= 0x4000_0010 {
            let khz = __cpuid(0x4000_0010).eax;
            if khz != 0 {
                return u64::from(khz);
            }
        }
    }
    unsafe { *TSC_SOURCE.get() = "pit" };
    pit_calibrate()
}

/// Measures the TSC against PIT channel 2 (1.193182 MHz), gated through
/// port 0x61, over 15 ms. Each port access is a VM exit and the vCPU may be
/// descheduled at any point, so: a count is stamped with the middle of the
/// TSC interval around its latch command, and PIT ticks are summed over
/// consecutive reads close enough (< 13M TSC ticks: under 27 ms at any TSC
/// above 0.5 GHz) for the 16-bit count not to have wrapped unseen; after a
/// longer gap that pair is left out.
fn pit_calibrate() -> u64 {
    const PIT_HZ: u64 = 1_193_182;
    const SPAN: u64 = 17_898; // 15 ms
    const MAX_GAP: u64 = 13_000_000;
    let g = inb(0x61);
    outb(0x61, (g & !0x02) | 0x01);
    outb(0x43, 0xB0); // channel 2, lo/hi, mode 0 (counts down, wraps)
    outb(0x42, 0xFF);
    outb(0x42, 0xFF);
    // (TSC at the latch, count)
    let read = || {
        let t0 = now();
        outb(0x43, 0x80); // latch channel 2
        let t1 = now();
        let lo = inb(0x42);
        let hi = inb(0x42);
        (t0 + (t1 - t0) / 2, u16::from_le_bytes([lo, hi]))
    };
    let mut prev = read();
    let (mut tsc, mut ticks) = (0u64, 0u64);
    loop {
        let cur = read();
        let gap = cur.0 - prev.0;
        if gap <= MAX_GAP {
            tsc += gap;
            ticks += u64::from(prev.1.wrapping_sub(cur.1));
        }
        prev = cur;
        if ticks >= SPAN {
            outb(0x61, g);
            return tsc * PIT_HZ / ticks / 1000;
        }
    }
}
