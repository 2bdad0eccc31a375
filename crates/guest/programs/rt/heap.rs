//! The heap: all available RAM above the image, mapped contiguously at
//! `HEAP_VA` and handed out by vCPU 0 during setup, never freed.

use super::console::println;
use super::multiboot::Boot;
use super::port::{EXIT_BAD_PARAM, exit};
use super::{Global, boot};

struct Heap {
    next: usize,
    end: usize,
}
static HEAP: Global<Heap> = Global::new(Heap {
    next: boot::HEAP_VA,
    end: boot::HEAP_VA,
});

/// Maps every 2 MiB of available RAM above the image contiguously at HEAP_VA.
/// The heap page directories are user-writable and were empty (never cached).
pub(super) fn heap_init(boot: &Boot) {
    const TWO_M: u64 = 2 << 20;
    let floor = (core::ptr::addr_of!(boot::__bss_end) as u64).next_multiple_of(TWO_M);
    let pd = core::ptr::addr_of_mut!(boot::rt_pd_heap) as *mut u64;
    let max = boot::HEAP_PDS * 512;
    let mut n = 0;
    for &(base, len) in boot.regions() {
        let mut a = base.max(floor).next_multiple_of(TWO_M);
        let end = (base + len) & !(TWO_M - 1);
        while a + TWO_M <= end && n < max {
            unsafe { core::ptr::write_volatile(pd.add(n), a | 0x87) };
            n += 1;
            a += TWO_M;
        }
    }
    let heap = unsafe { HEAP.get() };
    heap.end = boot::HEAP_VA + n * TWO_M as usize;
}

/// Bytes left in the heap.
pub(super) fn heap_free() -> usize {
    let h = unsafe { HEAP.get() };
    h.end - h.next
}

/// Takes `bytes` (page-aligned) from the heap; vCPU 0 during setup only.
pub(super) fn alloc(bytes: usize) -> Option<*mut u8> {
    let h = unsafe { HEAP.get() };
    let bytes = bytes.checked_next_multiple_of(4096)?;
    if h.end - h.next < bytes {
        return None;
    }
    let p = h.next;
    h.next += bytes;
    Some(p as *mut u8)
}

/// `alloc` for `n` values of `T`, reporting what did not fit as a bad parameter.
pub fn alloc_slice<T>(n: usize, what: &str) -> &'static mut [T] {
    match n.checked_mul(core::mem::size_of::<T>()).and_then(alloc) {
        Some(p) => unsafe { core::slice::from_raw_parts_mut(p as *mut T, n) },
        None => {
            println(format_args!(
                "ERROR bad parameter: {what} needs {} bytes but only {} bytes of RAM are free",
                n.saturating_mul(core::mem::size_of::<T>()),
                heap_free()
            ));
            exit(EXIT_BAD_PARAM)
        }
    }
}
