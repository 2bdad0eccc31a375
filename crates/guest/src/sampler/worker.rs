//! The sampling threads: what they share and the loop each runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Highest, realtime_priority};
use super::{PERIOD, Recording, Side, StatusSource, lock, monotonic_ns, sleep_until};
use crate::status::{self, VcpuSlot};

/// The pages being read: a side is `None` before it is attached and after
/// a failed read (its process ended).
type Sources = [Option<Arc<dyn StatusSource>>; 2];

/// What the threads share.
pub(super) struct Shared {
    pub(super) stop: AtomicBool,
    sources: Mutex<Sources>,
    /// Bumped on every change of `sources`, so threads copy it only then.
    generation: AtomicU64,
    vcpus: usize,
    pub(super) state: Mutex<State>,
    /// When the destination first made progress (0 = not yet).
    pub(super) resumed_at: AtomicU64,
}

/// The progress rule's memory and the record, updated one sample at a time.
pub(super) struct State {
    highest: Highest,
    pub(super) rec: Recording,
}

impl Shared {
    pub(super) fn new(source: Arc<dyn StatusSource>, vcpus: usize, rec: Recording) -> Shared {
        Shared {
            stop: AtomicBool::new(false),
            sources: Mutex::new([Some(source), None]),
            generation: AtomicU64::new(0),
            vcpus,
            state: Mutex::new(State {
                highest: Highest::default(),
                rec,
            }),
            resumed_at: AtomicU64::new(0),
        }
    }

    pub(super) fn attach(&self, side: Side, page: Arc<dyn StatusSource>) {
        lock(&self.sources)[side as usize] = Some(page);
        lock(&self.state).rec.sides[side as usize].attached_at = Some(monotonic_ns());
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// `page` of `side` could not be read: drop it (once, whichever thread
    /// saw it first).
    fn lose(&self, side: usize, page: &Arc<dyn StatusSource>) {
        let mut sources = lock(&self.sources);
        if sources[side].as_ref().is_some_and(|p| Arc::ptr_eq(p, page)) {
            sources[side] = None;
            lock(&self.state).rec.sides[side].lost_at = Some(monotonic_ns());
            self.generation.fetch_add(1, Ordering::Release);
        }
    }
}

/// One sampling thread: `index` of `count`, pinned to `cpu` if given.
/// Returns whether it ran at real-time priority.
pub(super) fn run(shared: &Shared, cpu: Option<usize>, index: usize, count: usize) -> bool {
    let realtime = realtime_priority();
    if let Some(cpu) = cpu {
        pin_to(cpu);
    }
    // Each thread samples every `count` periods, the threads staggered.
    let period = PERIOD.as_nanos() as u64;
    let step = period * count as u64;
    let range = status::slots_range(shared.vcpus);
    let mut bufs = [vec![0u8; range.len()], vec![0u8; range.len()]];
    let mut sides: Sources = [None, None];
    let mut generation = u64::MAX;
    let mut next = monotonic_ns() + period * index as u64;
    while !shared.stop.load(Ordering::Acquire) {
        let g = shared.generation.load(Ordering::Acquire);
        if g != generation {
            sides = lock(&shared.sources).clone();
            generation = g;
        }
        // The destination is read before the source: its copies of the
        // page came from the source earlier, so they are never above what
        // the source shows next, and the source is observed first below.
        // Once the guest ran on the destination the source is no longer
        // read: a migration that completes never runs it again, and its
        // memory going away (a long unmap holds its address space) would
        // stall this thread and hide the destination's progress.
        let resumed = shared.resumed_at.load(Ordering::Acquire) != 0;
        let mut slots: [Option<Vec<VcpuSlot>>; 2] = [None, None];
        for i in [Side::Destination as usize, Side::Source as usize] {
            if resumed && i == Side::Source as usize {
                continue;
            }
            let Some(page) = &sides[i] else { continue };
            if page.read(range.start, &mut bufs[i]).is_err() {
                shared.lose(i, page);
                continue;
            }
            slots[i] = Some(status::decode_slots(&bufs[i], shared.vcpus));
        }
        let t = monotonic_ns();
        lock(&shared.state).record(t, &slots, &shared.resumed_at);
        next += step;
        if next < t {
            next = t + step;
        }
        sleep_until(next);
    }
    realtime
}

impl State {
    /// Adds one sample taken at `t` (source, destination).
    fn record(&mut self, t: u64, slots: &[Option<Vec<VcpuSlot>>; 2], resumed_at: &AtomicU64) {
        let mut seen = [false; 2];
        let mut gap = None;
        for (i, s) in slots.iter().enumerate() {
            let Some(s) = s else { continue };
            let o = self.highest.observe(s);
            seen[i] = o.progress;
            gap = gap.max(o.new_long_gap_ticks);
        }
        let rec = &mut self.rec;
        rec.samples += 1;
        rec.timeline.push(t, seen[0] || seen[1]);
        for (i, &s) in seen.iter().enumerate() {
            if s {
                let side = &mut rec.sides[i];
                side.first_progress.get_or_insert(t);
                side.last_progress = Some(t);
            }
        }
        if seen[Side::Destination as usize] {
            let _ = resumed_at.compare_exchange(0, t, Ordering::Release, Ordering::Relaxed);
        }
        if let Some(ticks) = gap {
            rec.long_gaps.push((t, ticks));
        }
    }
}

/// The CPUs this process may run on (at most [`super::MAX_THREADS`] are used).
pub(super) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; the call writes
    // into it only.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Keeps the calling thread on `cpu` (best effort: unpinned it still
/// samples, only a stalled CPU may then stop more than one thread).
fn pin_to(cpu: usize) {
    // SAFETY: as in `allowed_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: callers pass a CPU from `allowed_cpus`, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t; 0 = the calling thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}
