//! Exceptions: the IDT pointing at the ring-0 stubs in `boot.rs`, and the
//! panic handler.

use core::fmt::Write;

use super::boot;
use super::console::{BUF, CONSOLE};
use super::port::{EXIT_CRASH, exit};

/// Fills the IDT (its page is user-writable, so ring 3 does it natively).
pub(super) fn idt_init() {
    let idt = core::ptr::addr_of_mut!(boot::rt_idt) as *mut u64;
    let gate = |handler: u64| -> (u64, u64) {
        let attr: u64 = 0x8E;
        let lo =
            (handler & 0xFFFF) | (0x08 << 16) | (attr << 40) | (((handler >> 16) & 0xFFFF) << 48);
        (lo, handler >> 32)
    };
    let table = unsafe { &*core::ptr::addr_of!(boot::rt_exc_table) };
    for (v, &h) in table.iter().enumerate() {
        let (lo, hi) = gate(h);
        unsafe {
            idt.add(2 * v).write_volatile(lo);
            idt.add(2 * v + 1).write_volatile(hi);
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let c = unsafe { CONSOLE.get() };
    if c.len > BUF - 256 {
        c.len = BUF - 256;
    }
    let _ = writeln!(c, "ERROR panic: {}", info.message());
    exit(EXIT_CRASH)
}
