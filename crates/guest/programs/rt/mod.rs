//! Guest runtime shared by every program: boot (ring 0, in `boot.rs`), then
//! in ring 3: Multiboot info, parameters, TSC clock, vCPU discovery and
//! start-up, a heap over all RAM, batched serial output with heartbeats,
//! the status page, and coordination of the periodic self-verification.
//!
//! A program provides `PROGRAM`, `setup()` (vCPU 0, before the other vCPUs
//! are released) and `run(cpu)`; its loops call [`poll`] often (vCPU 0 keeps
//! time there) and [`verify_due`]/[`verify_done`] for the verification rounds.

#![allow(dead_code)]

mod boot;
#[path = "../common/hist.rs"]
pub mod hist;
mod mem;
#[path = "../common/params.rs"]
pub mod params;
#[path = "../common/pattern.rs"]
pub mod pattern;
#[path = "../common/zipf.rs"]
pub mod zipf;

use core::arch::asm;
use core::arch::x86_64::{__cpuid, _rdtsc};
use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};

pub use boot::MAX_CPUS;
use params::Params;

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

// ---------------------------------------------------------------- ports, exit

#[inline(always)]
pub fn outb(port: u16, v: u8) {
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    }
}
#[inline(always)]
pub fn inb(port: u16) -> u8 {
    let v: u8;
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    }
    v
}
#[inline(always)]
fn outl(port: u16, v: u32) {
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
    }
}

const COM1: u16 = 0x3f8;
const EXIT_PORT: u16 = 0xf4;

/// Exit values (the VMM exits with `(v << 1) | 1`).
pub const EXIT_OK: u32 = 0;
pub const EXIT_INTEGRITY: u32 = 1;
pub const EXIT_BAD_PARAM: u32 = 2;
pub const EXIT_CRASH: u32 = 0x7f;

/// Writes `bytes` to the UART with one `rep outsb` (one VM exit per page of data at most).
fn serial_write(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    unsafe {
        asm!("rep outsb", inout("rcx") bytes.len() => _, inout("rsi") bytes.as_ptr() => _,
             in("dx") COM1, options(nostack, preserves_flags, readonly));
    }
}

/// Flushes pending output and ends the VM through the exit port.
pub fn exit(v: u32) -> ! {
    flush_all();
    outl(EXIT_PORT, v);
    // No exit device: stop here.
    park()
}

/// Parks this vCPU for good, spinning in ring 3 (ring 3 cannot halt, and
/// ring-0 code is emulated here).
pub fn park() -> ! {
    loop {
        spin(u64::MAX / 2);
    }
}

// ---------------------------------------------------------------- clock

/// TSC now.
#[inline(always)]
pub fn now() -> u64 {
    unsafe { _rdtsc() }
}

static TSC_KHZ: AtomicU64 = AtomicU64::new(0);

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
pub fn nanos(t: u64) -> u64 {
    ((t as u128 * 1_000_000) / TSC_KHZ.load(Relaxed).max(1) as u128) as u64
}

/// Spins for `t` ticks.
pub fn spin(t: u64) {
    let end = now() + t;
    while now() < end {
        core::hint::spin_loop();
    }
}

/// Where the TSC frequency came from (for the READY line).
static TSC_SOURCE: Global<&str> = Global::new("cpuid");

fn tsc_init() -> u64 {
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

// ---------------------------------------------------------------- multiboot

const MB_BOOT_MAGIC: u32 = 0x2BAD_B002;
const MAX_REGIONS: usize = 64;

/// What the boot loader told us, copied out of its memory.
pub struct Boot {
    cmdline: [u8; 4096],
    cmdline_len: usize,
    /// Available RAM regions (base, length).
    regions: [(u64, u64); MAX_REGIONS],
    nregions: usize,
}

impl Boot {
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }
    pub fn regions(&self) -> &[(u64, u64)] {
        &self.regions[..self.nregions]
    }
    /// Total available RAM in bytes.
    pub fn ram(&self) -> u64 {
        self.regions().iter().map(|r| r.1).sum()
    }
}

static BOOT: Global<Boot> = Global::new(Boot {
    cmdline: [0; 4096],
    cmdline_len: 0,
    regions: [(0, 0); MAX_REGIONS],
    nregions: 0,
});

unsafe fn rd<T: Copy>(addr: u64) -> T {
    unsafe { core::ptr::read_unaligned(addr as *const T) }
}

/// Copies the command line and the memory map out of the Multiboot info.
fn multiboot_read(info: u64, boot: &mut Boot) -> Result<(), &'static str> {
    let flags: u32 = unsafe { rd(info) };
    if flags & (1 << 2) != 0 {
        let mut p: u32 = unsafe { rd(info + 16) };
        while p != 0 && boot.cmdline_len < boot.cmdline.len() {
            let b: u8 = unsafe { rd(u64::from(p)) };
            if b == 0 {
                break;
            }
            boot.cmdline[boot.cmdline_len] = b;
            boot.cmdline_len += 1;
            p += 1;
        }
    }
    if flags & (1 << 6) != 0 {
        let len: u32 = unsafe { rd(info + 44) };
        let addr: u32 = unsafe { rd(info + 48) };
        let (mut p, end) = (u64::from(addr), u64::from(addr) + u64::from(len));
        while p + 24 <= end && boot.nregions < MAX_REGIONS {
            let size: u32 = unsafe { rd(p) };
            let base: u64 = unsafe { rd(p + 4) };
            let length: u64 = unsafe { rd(p + 12) };
            let kind: u32 = unsafe { rd(p + 20) };
            if kind == 1 && length > 0 {
                boot.regions[boot.nregions] = (base, length);
                boot.nregions += 1;
            }
            p += u64::from(size) + 4;
        }
    } else if flags & 1 != 0 {
        let upper: u32 = unsafe { rd(info + 8) };
        boot.regions[0] = (0x10_0000, u64::from(upper) * 1024);
        boot.nregions = 1;
    }
    if boot.nregions == 0 {
        return Err("the boot loader gave no memory map");
    }
    Ok(())
}

// ---------------------------------------------------------------- MP table

/// Number of enabled processors in the Intel MP table, if there is one.
fn mp_cpus() -> Option<usize> {
    let ebda = u64::from(unsafe { rd::<u16>(0x40E) }) << 4;
    let mut areas = [(0u64, 0u64); 3];
    if (0x8_0000..0xA_0000).contains(&ebda) {
        areas[0] = (ebda, ebda + 1024);
    }
    areas[1] = (0x9_FC00, 0xA_0000);
    areas[2] = (0xF_0000, 0x10_0000);
    for (start, end) in areas {
        let mut p = start;
        while p + 16 <= end {
            if unsafe { rd::<[u8; 4]>(p) } == *b"_MP_" && checksum(p, 16) {
                return Some(mp_count(p));
            }
            p += 16;
        }
    }
    None
}

/// Number of enabled processors in the ACPI MADT, if there is one. Under
/// QEMU on a slow (emulated ring 0) host SeaBIOS may list only the vCPUs
/// that answered it in time in its MP table; QEMU's own MADT lists them all.
fn madt_cpus() -> Option<usize> {
    let rsdp = [(0xE_0000u64, 0x10_0000u64)]
        .into_iter()
        .find_map(|(start, end)| {
            (start..end)
                .step_by(16)
                .find(|&p| unsafe { rd::<[u8; 8]>(p) } == *b"RSD PTR " && checksum(p, 20))
        })?;
    let rsdt = u64::from(unsafe { rd::<u32>(rsdp + 16) });
    if rsdt == 0 || rsdt >= 1 << 32 || unsafe { rd::<[u8; 4]>(rsdt) } != *b"RSDT" {
        return None;
    }
    let len = u64::from(unsafe { rd::<u32>(rsdt + 4) }).min(4096);
    let madt = (36..len)
        .step_by(4)
        .map(|o| u64::from(unsafe { rd::<u32>(rsdt + o) }))
        .find(|&t| t != 0 && unsafe { rd::<[u8; 4]>(t) } == *b"APIC")?;
    let len = u64::from(unsafe { rd::<u32>(madt + 4) }).min(1 << 16);
    let mut p = 44;
    let mut cpus = 0;
    while p + 2 <= len {
        let (kind, elen) = unsafe { (rd::<u8>(madt + p), u64::from(rd::<u8>(madt + p + 1))) };
        if elen < 2 {
            break;
        }
        let enabled = match kind {
            0 => (unsafe { rd::<u32>(madt + p + 4) } & 1) != 0,
            9 => (unsafe { rd::<u32>(madt + p + 8) } & 1) != 0,
            _ => false,
        };
        cpus += usize::from(enabled);
        p += elen;
    }
    (cpus > 0).then_some(cpus)
}

fn checksum(p: u64, len: u64) -> bool {
    (0..len).fold(0u8, |s, i| s.wrapping_add(unsafe { rd::<u8>(p + i) })) == 0
}

fn mp_count(fp: u64) -> usize {
    let table = u64::from(unsafe { rd::<u32>(fp + 4) });
    if table == 0 {
        // A default configuration (spec chapter 5): two processors.
        return 2;
    }
    if unsafe { rd::<[u8; 4]>(table) } != *b"PCMP" {
        return 1;
    }
    let count = unsafe { rd::<u16>(table + 34) };
    let mut p = table + 44;
    let mut cpus = 0;
    for _ in 0..count {
        match unsafe { rd::<u8>(p) } {
            0 => {
                if unsafe { rd::<u8>(p + 3) } & 1 != 0 {
                    cpus += 1;
                }
                p += 20;
            }
            1..=4 => p += 8,
            _ => break,
        }
    }
    cpus.max(1)
}

// ---------------------------------------------------------------- heap

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
fn heap_init(boot: &Boot) {
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
pub fn heap_free() -> usize {
    let h = unsafe { HEAP.get() };
    h.end - h.next
}

/// Takes `bytes` (page-aligned) from the heap; vCPU 0 during setup only.
pub fn alloc(bytes: usize) -> Option<*mut u8> {
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

// ---------------------------------------------------------------- console

pub const BUF: usize = 4096;
/// Flush when this much is buffered (a line plus a heartbeat always fit after).
const FLUSH_AT: usize = 3072;

struct Console {
    buf: [u8; BUF],
    len: usize,
}
static CONSOLE: Global<Console> = Global::new(Console {
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

fn flush_all() {
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

// ---------------------------------------------------------------- status page

/// The status page the VMM reads without exits (layout in docs/GUESTS.md).
const STATUS: usize = 0x6000;
const STATUS_VERSION: u32 = 1;

fn status_u64(off: usize, v: u64) {
    unsafe { core::ptr::write_volatile((STATUS + off) as *mut u64, v) }
}

fn status_init(name: &str, vcpus: u32) {
    unsafe { core::ptr::write_bytes(STATUS as *mut u8, 0, 4096) };
    status_u64(0, u64::from_le_bytes(*b"FERRYST1"));
    status_u64(16, u64::from(STATUS_VERSION) | (u64::from(vcpus) << 32));
    let mut n = [0u8; 16];
    let len = name.len().min(15);
    n[..len].copy_from_slice(&name.as_bytes()[..len]);
    status_u64(104, u64::from_le_bytes(n[..8].try_into().unwrap()));
    status_u64(112, u64::from_le_bytes(n[8..].try_into().unwrap()));
}

/// Latest latency percentiles, published by kvstore (ns).
pub static P50_NS: AtomicU64 = AtomicU64::new(0);
pub static P99_NS: AtomicU64 = AtomicU64::new(0);

// ---------------------------------------------------------------- heartbeat

/// Work done per vCPU: pages written (dirtier) or operations (kvstore).
pub static PROGRESS: [PerCpu; MAX_CPUS] = [PERCPU0; MAX_CPUS];

/// Adds `n` units of work done by `cpu`.
#[inline(always)]
pub fn progress(cpu: usize, n: u64) {
    let c = &PROGRESS[cpu].0;
    c.store(c.load(Relaxed) + n, Relaxed);
}

fn progress_total() -> u64 {
    PROGRESS.iter().map(|c| c.0.load(Relaxed)).sum()
}

struct Heart {
    seq: u64,
    next: u64,
    interval: u64,
    flush_every: u64,
    last_flush: u64,
    window_start: u64,
    window_work: u64,
    rate: u64,
    deadline: u64,
    verify_every: u64,
    next_verify: u64,
    /// Measured serial cost, TSC ticks per byte (0 = not measured yet).
    byte_cost: u64,
    serial_pct: u64,
}
static HEART: Global<Heart> = Global::new(Heart {
    seq: 0,
    next: 0,
    interval: 1,
    flush_every: 0,
    last_flush: 0,
    window_start: 0,
    window_work: 0,
    rate: 0,
    deadline: u64::MAX,
    verify_every: 0,
    next_verify: u64::MAX,
    byte_cost: 0,
    serial_pct: 25,
});

impl Heart {
    /// Writes a heartbeat line stamped `t`, updates the status page, flushes when due.
    fn beat(&mut self, t: u64, force_flush: bool) {
        let work = progress_total();
        let span = t.saturating_sub(self.window_start);
        if span >= tsc_hz() / 10 {
            self.rate =
                ((work - self.window_work) as u128 * tsc_hz() as u128 / span as u128) as u64;
            self.window_start = t;
            self.window_work = work;
        }
        let c = unsafe { CONSOLE.get() };
        let _ = writeln!(c, "HB seq={} tsc={} rate={}", self.seq, t, self.rate);
        // Seqlock write of the status page.
        let s = unsafe { core::ptr::read_volatile((STATUS + 8) as *const u64) };
        status_u64(8, s + 1);
        core::sync::atomic::compiler_fence(Release);
        status_u64(24, self.seq);
        status_u64(32, t);
        let (wo, ro) = if PROGRAM_IS_KV.load(Relaxed) {
            (72, 80)
        } else {
            (40, 48)
        };
        status_u64(wo, work);
        status_u64(ro, self.rate);
        status_u64(56, VERIFY_PASSES.load(Relaxed));
        status_u64(64, VERIFY_FAILS.load(Relaxed));
        status_u64(88, P50_NS.load(Relaxed));
        status_u64(96, P99_NS.load(Relaxed));
        core::sync::atomic::compiler_fence(Release);
        status_u64(8, s + 2);
        self.seq += 1;
        if force_flush
            || self.seq == 1
            || c.len >= FLUSH_AT
            || t.wrapping_sub(self.last_flush) >= self.flush_every
        {
            let before = now();
            serial_write(&c.buf[..c.len]);
            let after = now();
            if c.len >= 16 {
                let cost = (after - before) / c.len as u64;
                self.byte_cost = if self.byte_cost == 0 {
                    cost
                } else {
                    (3 * self.byte_cost + cost) / 4
                };
            }
            c.len = 0;
            self.last_flush = after;
        }
    }

    /// Time to the next heartbeat: `hb`, or longer if the serial budget needs it.
    fn spacing(&self) -> u64 {
        const LINE: u64 = 40;
        self.interval
            .max(self.byte_cost * LINE * 100 / self.serial_pct)
    }
}

static PROGRAM_IS_KV: AtomicBool = AtomicBool::new(false);

/// vCPU 0's time keeping: heartbeats, flushes, verification rounds, run end.
/// Other vCPUs may call it; it does nothing for them. Returns true when a
/// heartbeat was written (a cheap moment for per-second work).
#[inline]
pub fn poll(cpu: usize) -> bool {
    if cpu != 0 {
        return false;
    }
    let h = unsafe { HEART.get() };
    let t = now();
    if t < h.next {
        return false;
    }
    tick(h, t);
    true
}

#[inline(never)]
fn tick(h: &mut Heart, t: u64) {
    h.beat(t, false);
    // Never burst to catch up (the TSC jumps by real time after a restore).
    let spacing = h.spacing();
    h.next += spacing;
    if h.next < t {
        h.next = t + spacing;
    }
    verify_collect(t);
    if t >= h.next_verify && t < h.deadline {
        verify_start();
        h.next_verify = t + h.verify_every;
    }
    if t >= h.deadline && !FINAL.load(Relaxed) {
        FINAL.store(true, Relaxed);
        verify_start();
    }
}

// ---------------------------------------------------------------- verification

/// One vCPU's result of a verification round.
#[derive(Clone, Copy)]
pub struct VerifyResult {
    /// Pages of memory checked.
    pub pages: u64,
    /// Keys checked (kvstore), else 0.
    pub keys: u64,
    /// Highest generation seen.
    pub max_gen: u64,
    /// Blocks that failed.
    pub fails: u64,
    /// First failure: what failed ("page"/"key"), index, expected and found.
    pub first: Option<(&'static str, u64, u64, pattern::Found)>,
}

impl VerifyResult {
    pub const EMPTY: VerifyResult = VerifyResult {
        pages: 0,
        keys: 0,
        max_gen: 0,
        fails: 0,
        first: None,
    };

    /// Records the outcome of checking one block.
    pub fn record(
        &mut self,
        kind: &'static str,
        index: u64,
        generation: u32,
        r: Result<(), pattern::Found>,
    ) {
        self.max_gen = self.max_gen.max(u64::from(generation));
        if let Err(found) = r {
            self.fails += 1;
            if self.first.is_none() {
                self.first = Some((kind, index, u64::from(generation), found));
            }
        }
    }
}

/// Round requested by vCPU 0 (0 = none yet).
static VERIFY_ROUND: AtomicU64 = AtomicU64::new(0);
/// Round each vCPU last finished.
static VERIFY_DONE: [PerCpu; MAX_CPUS] = [PERCPU0; MAX_CPUS];
static VERIFY_RESULTS: Global<[VerifyResult; MAX_CPUS]> =
    Global::new([VerifyResult::EMPTY; MAX_CPUS]);
static VERIFY_PASSES: AtomicU64 = AtomicU64::new(0);
static VERIFY_FAILS: AtomicU64 = AtomicU64::new(0);
/// The round in progress is the final one (run= elapsed).
static FINAL: AtomicBool = AtomicBool::new(false);
static COLLECTED: AtomicU64 = AtomicU64::new(0);

fn verify_start() {
    let r = VERIFY_ROUND.load(Relaxed);
    if COLLECTED.load(Relaxed) == r {
        VERIFY_ROUND.store(r + 1, Release);
    }
}

/// The round `cpu` should verify now, if any.
#[inline]
pub fn verify_due(cpu: usize) -> Option<u64> {
    let r = VERIFY_ROUND.load(Acquire);
    (r > VERIFY_DONE[cpu].0.load(Relaxed)).then_some(r)
}

/// Reports `cpu`'s result for `round`.
pub fn verify_done(cpu: usize, round: u64, result: VerifyResult) {
    unsafe { (*VERIFY_RESULTS.0.get())[cpu] = result };
    VERIFY_DONE[cpu].0.store(round, Release);
}

fn verify_collect(_t: u64) {
    let r = VERIFY_ROUND.load(Relaxed);
    if COLLECTED.load(Relaxed) == r {
        return;
    }
    let n = nthreads();
    if (0..n).any(|c| VERIFY_DONE[c].0.load(Acquire) < r) {
        return;
    }
    COLLECTED.store(r, Relaxed);
    let results = unsafe { &*VERIFY_RESULTS.0.get() };
    let mut total = VerifyResult::EMPTY;
    for v in &results[..n] {
        total.pages += v.pages;
        total.keys += v.keys;
        total.max_gen = total.max_gen.max(v.max_gen);
        total.fails += v.fails;
        if total.first.is_none() {
            total.first = v.first;
        }
    }
    match total.first {
        None => {
            VERIFY_PASSES.fetch_add(1, Relaxed);
            if total.keys > 0 {
                println(format_args!(
                    "VERIFY ok pages={} keys={} gen={}",
                    total.pages, total.keys, total.max_gen
                ));
            } else {
                println(format_args!(
                    "VERIFY ok pages={} gen={}",
                    total.pages, total.max_gen
                ));
            }
        }
        Some((kind, index, expected, found)) => {
            VERIFY_FAILS.fetch_add(1, Relaxed);
            match found {
                pattern::Found::Generation(g) => println(format_args!(
                    "VERIFY FAIL {kind}={index} expected={expected} found={g} failures={}",
                    total.fails
                )),
                pattern::Found::Corrupt => println(format_args!(
                    "VERIFY FAIL {kind}={index} expected={expected} found=corrupt failures={}",
                    total.fails
                )),
            }
        }
    }
    if FINAL.load(Relaxed) {
        let h = unsafe { HEART.get() };
        h.beat(now(), true);
        exit(if VERIFY_FAILS.load(Relaxed) == 0 {
            EXIT_OK
        } else {
            EXIT_INTEGRITY
        });
    }
}

// ---------------------------------------------------------------- vCPUs

static NTHREADS: AtomicUsize = AtomicUsize::new(1);
static GO: AtomicBool = AtomicBool::new(false);

/// Number of workload threads (one per running vCPU).
pub fn nthreads() -> usize {
    NTHREADS.load(Relaxed)
}

/// Prepares TSS, GDT slot and stacks for APs 1..MAX_CPUS, copies the
/// trampoline to 0x8000 and broadcasts INIT-SIPI-SIPI through the xAPIC.
fn start_aps(expected: usize) {
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
fn await_aps(expected: usize) -> usize {
    let deadline = now() + ticks(3_000_000_000);
    let arrived = || unsafe { boot::rt_ap_arrived.load(Acquire) } as usize;
    while arrived() + 1 < expected && now() < deadline {
        core::hint::spin_loop();
    }
    let n = (arrived() + 1).min(expected).min(MAX_CPUS);
    NTHREADS.store(n, Release);
    n
}

// ---------------------------------------------------------------- entry points

/// vCPU 0 in ring 3, straight from the boot code.
#[unsafe(no_mangle)]
extern "C" fn rt_bsp_main() -> ! {
    let t_start = unsafe { core::ptr::addr_of!(boot::rt_boot_tsc).read_volatile() };
    idt_init();
    let boot = unsafe { BOOT.get() };
    let magic = unsafe { core::ptr::addr_of!(boot::rt_boot_magic).read_volatile() };
    let info = unsafe { core::ptr::addr_of!(boot::rt_boot_info).read_volatile() };
    if magic != MB_BOOT_MAGIC {
        early_error(format_args!(
            "ERROR not started by a Multiboot loader (eax={magic:#x})"
        ));
    }
    if let Err(e) = multiboot_read(u64::from(info), boot) {
        early_error(format_args!("ERROR {e}"));
    }
    let program = crate::PROGRAM;
    PROGRAM_IS_KV.store(program == params::Program::Kvstore, Relaxed);
    let p = match params::parse(program, boot.cmdline()) {
        Ok(p) => p,
        Err(e) => early_error_code(format_args!("ERROR bad parameter {e}"), EXIT_BAD_PARAM),
    };
    unsafe { *PARAMS.get() = p };
    heap_init(boot);
    let expected = mp_cpus().max(madt_cpus()).unwrap_or(1).clamp(1, MAX_CPUS);
    // The APs boot (slowly, ring 0 is emulated) while the TSC is measured.
    if expected > 1 {
        start_aps(expected);
    }
    TSC_KHZ.store(tsc_init(), Relaxed);
    let h = unsafe { HEART.get() };
    h.interval = ticks(p.hb_ns);
    h.flush_every = ticks(p.flush_ns);
    if p.run_ns > 0 {
        h.deadline = t_start + ticks(p.run_ns);
    }
    h.verify_every = ticks(p.verify_ns);
    h.serial_pct = p.serial_pct;
    let n = await_aps(expected);
    crate::setup(boot, &p);
    status_init(program.name(), n as u32);
    GO.store(true, Release);
    let t = now();
    h.window_start = t;
    h.next = t + h.interval;
    if p.verify_ns > 0 {
        h.next_verify = t + h.verify_every;
    }
    let c = unsafe { CONSOLE.get() };
    let _ = write!(
        c,
        "READY guest={} vcpus={} mem={} tsc_khz={} tsc_src={} boot_us={} hb_us={}",
        program.name(),
        n,
        boot.ram(),
        tsc_khz(),
        unsafe { *TSC_SOURCE.get() },
        nanos(t - t_start) / 1000,
        p.hb_ns / 1000,
    );
    let _ = match program {
        params::Program::Dirtier => writeln!(c, " ws={} rate={}", p.ws, p.rate),
        params::Program::Kvstore => writeln!(c, " keys={} vsize={}", p.keys, p.vsize),
        params::Program::Idle => writeln!(c),
    };
    h.beat(t, true);
    crate::run(0)
}

/// Parameters of this boot.
static PARAMS: Global<Params> = Global::new(Params::DEFAULT);
/// The parsed parameters.
pub fn params() -> &'static Params {
    unsafe { PARAMS.get() }
}

/// An AP in ring 3, straight from the trampoline.
#[unsafe(no_mangle)]
extern "C" fn rt_ap_main(cpu: u64) -> ! {
    while !GO.load(Acquire) {
        core::hint::spin_loop();
    }
    let cpu = cpu as usize;
    if cpu >= nthreads() {
        park();
    }
    crate::run(cpu)
}

fn early_error(args: fmt::Arguments) -> ! {
    early_error_code(args, EXIT_BAD_PARAM)
}

fn early_error_code(args: fmt::Arguments, code: u32) -> ! {
    let c = unsafe { CONSOLE.get() };
    let _ = c.write_fmt(args);
    let _ = c.write_str("\n");
    exit(code)
}

// ---------------------------------------------------------------- IDT, exceptions

/// Fills the IDT (its page is user-writable, so ring 3 does it natively).
fn idt_init() {
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

// ---------------------------------------------------------------- helpers for programs

/// xorshift64* pseudo-random numbers.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(pattern::mix(seed) | 1)
    }
    #[inline(always)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in 0..n (n > 0).
    #[inline(always)]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in [0, 1).
    #[inline(always)]
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Token-bucket pacer for `rate` units/s (0 = unlimited). Catch-up after a
/// pause is capped at 10 ms worth of work, so there is no burst.
pub struct Pacer {
    per_sec: u64,
    tokens: u64,
    last: u64,
    cap: u64,
}
impl Pacer {
    pub fn new(per_sec: u64) -> Pacer {
        let hz = tsc_hz();
        Pacer {
            per_sec,
            tokens: 0,
            last: now(),
            cap: (per_sec * hz / 100).max(hz),
        }
    }
    /// May one more unit be done now?
    #[inline]
    pub fn take(&mut self) -> bool {
        if self.per_sec == 0 {
            return true;
        }
        let hz = tsc_hz();
        if self.tokens < hz {
            let t = now();
            let dt = t.saturating_sub(self.last).min(hz);
            self.last = t;
            self.tokens = (self.tokens + dt * self.per_sec).min(self.cap);
            if self.tokens < hz {
                return false;
            }
        }
        self.tokens -= hz;
        true
    }
    /// Forgets accumulated allowance (e.g. after an idle phase).
    pub fn reset(&mut self) {
        self.tokens = 0;
        self.last = now();
    }
}
