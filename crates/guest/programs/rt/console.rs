//! Batched serial output: lines collect in one buffer that vCPU 0 flushes
//! with the heartbeats, so each flush is one burst of VM exits.

use core::fmt::{self, Write};

use super::Global;
use super::clock::now;
use super::heartbeat::HEART;
use super::port::serial_write;

pub(super) const BUF: usize = 4096;
/// Flush when this much is buffered (a line plus a heartbeat always fit after).
pub(super) const FLUSH_AT: usize = 3072;

/// The pending output. `#[repr(C)]`: the exception stub in `boot.rs` finds
/// `len` right after `buf`.
#[repr(C)]
pub(super) struct Console {
    pub(super) buf: [u8; BUF],
    pub(super) len: usize,
}
const _: () = assert!(core::mem::offset_of!(Console, len) == BUF);

pub(super) static CONSOLE: Global<Console> = Global::new(Console {
    buf: [0; BUF],
    len: 0,
});

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(BUF - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes out everything pending.
pub(super) fn flush_all() {
    let c = unsafe { CONSOLE.get() };
    serial_write(&c.buf[..c.len]);
    c.len = 0;
}

/// Appends one line (vCPU 0 only). When the buffer is nearly full, a
/// heartbeat and a flush come first, so every flush ends with a heartbeat.
pub fn println(args: fmt::Arguments) {
    let c = unsafe { CONSOLE.get() };
    if c.len > FLUSH_AT - 512 {
        let h = unsafe { HEART.get() };
        h.beat(now(), true);
    }
    let c = unsafe { CONSOLE.get() };
    let _ = c.write_fmt(args);
    let _ = c.write_str("\n");
}
