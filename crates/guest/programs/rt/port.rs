//! Port I/O from ring 3 (the TSS bitmap opens the few ports used), the
//! UART, the idle port, and the end of the VM through the exit port.

use core::arch::asm;

use super::console::flush_all;
use super::rest::rest_until;

#[inline(always)]
pub(super) fn outb(port: u16, v: u8) {
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    }
}
#[inline(always)]
pub(super) fn inb(port: u16) -> u8 {
    let v: u8;
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    }
    v
}
#[inline(always)]
pub(super) fn outl(port: u16, v: u32) {
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
    }
}

const COM1: u16 = 0x3f8;
const EXIT_PORT: u16 = 0xf4;
/// Ferry's idle port: a 32-bit write of N asks the VMM to keep this vCPU
/// out of the guest for N µs (at most 10 ms); others ignore it.
pub(super) const IDLE_PORT: u16 = 0xe0;

/// Exit values (the VMM exits with `(v << 1) | 1`).
pub(super) const EXIT_OK: u32 = 0;
pub(super) const EXIT_INTEGRITY: u32 = 1;
pub(super) const EXIT_BAD_PARAM: u32 = 2;
pub(super) const EXIT_CRASH: u32 = 0x7f;

/// Writes `bytes` to the UART with one `rep outsb` (one VM exit per page of data at most).
pub(super) fn serial_write(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    unsafe {
        asm!("rep outsb", inout("rcx") bytes.len() => _, inout("rsi") bytes.as_ptr() => _,
             in("dx") COM1, options(nostack, preserves_flags, readonly));
    }
}

/// Flushes pending output and ends the VM through the exit port.
pub(super) fn exit(v: u32) -> ! {
    flush_all();
    outl(EXIT_PORT, v);
    // No exit device: stop here.
    park()
}

/// Parks this vCPU for good: ring 3 cannot halt (and ring-0 code is
/// emulated here), so it spins, or sleeps in the VMM with `idle=sleep`.
pub fn park() -> ! {
    loop {
        // Not vCPU 0's heartbeats: it has stopped keeping time.
        rest_until(usize::MAX, u64::MAX);
    }
}
