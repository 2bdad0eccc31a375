//! Guest runtime shared by every program: boot (ring 0, in `boot.rs`), then
//! in ring 3: Multiboot info, parameters, TSC clock, vCPU discovery and
//! start-up, a heap over all RAM, batched serial output with heartbeats,
//! the status page, waits (spinning, or sleeping in the VMM), and
//! coordination of the periodic self-verification.
//!
//! A program provides `PROGRAM`, `setup()` (vCPU 0, before the other vCPUs
//! are released) and `run(cpu)`; its loops call [`poll`] often (vCPU 0 keeps
//! time there) and [`verify_due`]/[`verify_done`] for the verification rounds.

#![allow(dead_code)]

mod boot;
mod clock;
mod console;
mod entry;
mod exceptions;
mod firmware;
mod heap;
mod heartbeat;
#[path = "../common/hist.rs"]
pub mod hist;
mod mem;
mod multiboot;
mod pacer;
#[path = "../common/params.rs"]
pub mod params;
#[path = "../common/pattern.rs"]
pub mod pattern;
mod port;
mod rest;
mod rng;
mod status;
mod vcpus;
mod verify;
#[path = "../common/zipf.rs"]
pub mod zipf;

use core::cell::UnsafeCell;
use core::sync::atomic::AtomicU64;

// The programs' interface; each program uses a part of it.
#[allow(unused_imports)]
pub use self::{
    boot::MAX_CPUS,
    clock::{now, ticks, tsc_hz, tsc_khz},
    console::println,
    entry::params,
    heap::alloc_slice,
    heartbeat::{poll, progress, progress_total},
    multiboot::Boot,
    pacer::Pacer,
    port::park,
    rest::rest_until,
    rng::Rng,
    status::{P50_NS, P99_NS},
    vcpus::nthreads,
    verify::{VerifyResult, verify_done, verify_due},
};

/// A global only one vCPU mutates (or that is set up before others start).
pub struct Global<T>(UnsafeCell<T>);
unsafe impl<T> Sync for Global<T> {}
impl<T> Global<T> {
    pub const fn new(v: T) -> Self {
        Global(UnsafeCell::new(v))
    }
    /// # Safety
    /// No other reference to the value may be alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self) -> &mut T {
        unsafe { &mut *self.0.get() }
    }
}

/// A counter on its own cache line, written by one vCPU, read by vCPU 0.
#[repr(align(64))]
pub struct PerCpu(pub AtomicU64);
#[allow(clippy::declare_interior_mutable_const)]
const PERCPU0: PerCpu = PerCpu(AtomicU64::new(0));

/// Reads a `T` at physical address `addr` (identity-mapped below 4 GiB).
///
/// # Safety
/// `addr` must be mapped and readable.
unsafe fn rd<T: Copy>(addr: u64) -> T {
    unsafe { core::ptr::read_unaligned(addr as *const T) }
}
