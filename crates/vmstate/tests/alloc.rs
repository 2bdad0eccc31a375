//! Lying lengths must not make the reader allocate: an oversize length is
//! refused before any buffer grows, and an allowed but unbacked length only
//! grows the buffer as data actually arrives.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use vmstate::record::kind;
use vmstate::{DecodeError, FrameReader, Kinds, MAX_PAYLOAD};

struct Tracking;

thread_local! {
    /// Largest single allocation made by this thread since the last reset.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only records sizes.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.with(|l| l.set(l.get().max(layout.size())));
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.with(|l| l.set(l.get().max(new_size)));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

fn largest_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(|l| l.get()))
}

fn header(len: u32) -> Vec<u8> {
    let mut h = vec![kind::PAGES, 0, 0, 0];
    h.extend_from_slice(&len.to_le_bytes());
    h
}

#[test]
fn lying_lengths_do_not_allocate() {
    // 4 GiB claimed: refused from the header alone.
    let input = header(u32::MAX);
    let (res, largest) = largest_during(|| {
        let mut fr = FrameReader::new(&input[..], Kinds::state_records());
        fr.next_frame().map(|_| ())
    });
    assert!(
        matches!(res, Err(DecodeError::Oversize { len: u32::MAX, .. })),
        "{res:?}"
    );
    assert!(
        largest < 64 << 10,
        "allocated {largest} bytes for a refused frame"
    );

    // 16 MiB claimed (allowed), 100 bytes present: truncation, small buffer.
    let mut input = header(MAX_PAYLOAD);
    input.extend_from_slice(&[7u8; 100]);
    let (res, largest) = largest_during(|| {
        let mut fr = FrameReader::new(&input[..], Kinds::state_records());
        fr.next_frame().map(|_| ())
    });
    assert!(
        matches!(res, Err(DecodeError::Truncated { frame: 0, .. })),
        "{res:?}"
    );
    assert!(
        largest <= (1 << 20) + (64 << 10),
        "allocated {largest} bytes for 100 bytes of payload"
    );
}
