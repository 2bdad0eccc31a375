//! Guest-visible downtime to the microsecond: a host thread that samples
//! the guests' pass counters ([`crate::status::VcpuSlot`]) on both sides of
//! a migration, as often as it can, and the rule that turns what it saw
//! into the longest time in which the guest made no progress anywhere.
//!
//! The thread runs at real-time priority (SCHED_FIFO) when the host lets
//! it, so busy vCPUs cannot starve it; it sleeps between samples (it never
//! spins), aiming at one sample every [`PERIOD`]. Ferry and the QEMU
//! yardstick measure the same way; only the [`StatusSource`] differs.

mod recording;
mod source;
mod timeline;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use recording::{COARSE_US, GuestDowntime, NoDowntime, Recording, Side, SideRecord};
pub use source::{MappedFile, ProcessMemory, ReadStatusError, StatusSource, read_status};
pub use timeline::{Highest, Observed, Timeline};

use crate::status;

/// The interval the sampler aims at between two samples.
pub const PERIOD: Duration = Duration::from_micros(25);
/// Real-time priority of the sampling thread (SCHED_FIFO, 1-99): above
/// ordinary threads, below the kernel's own real-time threads.
const PRIORITY: libc::c_int = 10;

/// CLOCK_MONOTONIC now, in ns: the clock of every sampler time.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into `ts` only.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until CLOCK_MONOTONIC reads `t` ns.
fn sleep_until(t: u64) {
    let ts = libc::timespec {
        tv_sec: (t / 1_000_000_000) as libc::time_t,
        tv_nsec: (t % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: reads `ts` only; an interrupted sleep just ends early.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

/// Asks for the sampler's real-time priority (SCHED_FIFO) for the calling
/// thread, e.g. one that must find the destination in time; false if the
/// host refuses. The thread must sleep most of the time.
pub fn realtime_priority() -> bool {
    let param = libc::sched_param {
        sched_priority: PRIORITY,
    };
    // SAFETY: changes the calling thread's scheduling only.
    unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) == 0 }
}

struct Shared {
    stop: AtomicBool,
    /// The destination, until the thread takes it.
    attach: Mutex<Option<Box<dyn StatusSource>>>,
    /// When the destination first made progress (0 = not yet).
    resumed_at: AtomicU64,
}

/// A running sampler; [`Sampler::finish`] stops it and returns its record.
pub struct Sampler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Recording>>,
}

/// Why a sampler could not start.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("the source guest's status: {0}")]
    Status(#[from] ReadStatusError),
    #[error("cannot start the sampling thread: {0}")]
    Thread(io::Error),
}

impl Sampler {
    /// Starts sampling the source guest's status page (which must be valid:
    /// it gives the vCPU count and the TSC rate). The destination joins
    /// with [`Sampler::attach_destination`] once its memory exists.
    pub fn start(mut source: Box<dyn StatusSource>) -> Result<Sampler, SamplerError> {
        let st = read_status(source.as_mut())?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            attach: Mutex::new(None),
            resumed_at: AtomicU64::new(0),
        });
        let worker = Worker {
            shared: shared.clone(),
            sides: [Some(source), None],
            vcpus: (st.vcpus as usize).clamp(1, status::MAX_SLOTS),
            highest: Highest::default(),
            rec: Recording {
                tsc_khz: st.tsc_khz,
                sides: [
                    SideRecord {
                        attached_at: Some(monotonic_ns()),
                        ..SideRecord::default()
                    },
                    SideRecord::default(),
                ],
                ..Recording::default()
            },
        };
        let thread = std::thread::Builder::new()
            .name("guest-sampler".into())
            .spawn(move || worker.run())
            .map_err(SamplerError::Thread)?;
        Ok(Sampler {
            shared,
            thread: Some(thread),
        })
    }

    /// Adds the destination's status page (read from the next sample on).
    pub fn attach_destination(&self, destination: Box<dyn StatusSource>) {
        self.attacher().attach_destination(destination);
    }

    /// A handle for adding the destination from another thread.
    pub fn attacher(&self) -> Attacher {
        Attacher(self.shared.clone())
    }

    /// Waits until `margin` has passed since the guest first made progress
    /// on the destination (or `timeout` since the call), then stops.
    pub fn finish(mut self, margin: Duration, timeout: Duration) -> Recording {
        let deadline = Instant::now() + timeout;
        let margin_ns = margin.as_nanos() as u64;
        while Instant::now() < deadline {
            let resumed = self.shared.resumed_at.load(Ordering::Acquire);
            if resumed != 0 && monotonic_ns() >= resumed + margin_ns {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stop()
    }

    fn stop(&mut self) -> Recording {
        self.shared.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

/// Adds the destination to a running [`Sampler`] (cheap to clone, `Send`).
#[derive(Clone)]
pub struct Attacher(Arc<Shared>);

impl Attacher {
    /// Adds the destination's status page (read from the next sample on).
    pub fn attach_destination(&self, destination: Box<dyn StatusSource>) {
        *self.0.attach.lock().unwrap_or_else(|e| e.into_inner()) = Some(destination);
    }
}

/// The sampling thread's state.
struct Worker {
    shared: Arc<Shared>,
    sides: [Option<Box<dyn StatusSource>>; 2],
    vcpus: usize,
    highest: Highest,
    rec: Recording,
}

impl Worker {
    fn run(mut self) -> Recording {
        self.rec.realtime = realtime_priority();
        let period = PERIOD.as_nanos() as u64;
        let range = status::slots_range(self.vcpus);
        let mut buf = vec![0u8; range.len()];
        let mut next = monotonic_ns();
        while !self.shared.stop.load(Ordering::Acquire) {
            self.take_destination();
            let mut seen = [false; 2];
            let mut gap = None;
            // The source first: a copy on the destination is never newer
            // than what the source showed just before.
            for (i, side) in self.sides.iter_mut().enumerate() {
                let Some(src) = side else { continue };
                if src.read(range.start, &mut buf).is_err() {
                    *side = None;
                    self.rec.sides[i].lost_at = Some(monotonic_ns());
                    continue;
                }
                let o = self
                    .highest
                    .observe(&status::decode_slots(&buf, self.vcpus));
                seen[i] = o.progress;
                gap = gap.max(o.new_long_gap_ticks);
            }
            let t = monotonic_ns();
            self.record(t, seen, gap);
            next += period;
            if next < t {
                next = t + period;
            }
            sleep_until(next);
        }
        self.rec
    }

    fn take_destination(&mut self) {
        if self.sides[Side::Destination as usize].is_some() {
            return;
        }
        let new = self
            .shared
            .attach
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(d) = new {
            self.sides[Side::Destination as usize] = Some(d);
            self.rec.sides[Side::Destination as usize].attached_at = Some(monotonic_ns());
        }
    }

    fn record(&mut self, t: u64, seen: [bool; 2], gap: Option<u64>) {
        let rec = &mut self.rec;
        rec.samples += 1;
        rec.timeline.push(t, seen[0] || seen[1]);
        for (i, &s) in seen.iter().enumerate() {
            let side = &mut rec.sides[i];
            if s {
                side.first_progress.get_or_insert(t);
                side.last_progress = Some(t);
            }
        }
        if seen[Side::Destination as usize] {
            let _ =
                self.shared
                    .resumed_at
                    .compare_exchange(0, t, Ordering::Release, Ordering::Relaxed);
        }
        if let Some(ticks) = gap {
            rec.long_gaps.push((t, ticks));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{PAGE_SIZE, Status, VERSION, VcpuSlot};

    /// A status page in this process that a test thread writes like a guest.
    struct Page(Vec<u8>);

    impl Page {
        fn new() -> Page {
            let mut p = vec![0u8; PAGE_SIZE];
            let s = Status {
                version: VERSION,
                vcpus: 2,
                tsc_khz: 1_000_000,
                ..Status::default()
            };
            p[..status::LEN].copy_from_slice(&status::encode(&s, 0));
            Page(p)
        }
        fn addr(&self) -> u64 {
            self.0.as_ptr() as u64
        }
        fn source(&self) -> Box<dyn StatusSource> {
            Box::new(ProcessMemory::new(std::process::id(), self.addr()))
        }
    }

    /// Sets vCPU 1's pass counter at the page at `addr` (volatile: the
    /// sampler reads it concurrently).
    fn set_passes(addr: u64, passes: u64) {
        let off = status::slots_range(2).start + status::SLOT_SIZE;
        let bytes = VcpuSlot {
            passes,
            ..VcpuSlot::default()
        }
        .encode();
        for (i, b) in bytes[..8].iter().enumerate() {
            // SAFETY: inside the test's page, which outlives the sampler.
            unsafe { std::ptr::write_volatile((addr as usize + off + i) as *mut u8, *b) };
        }
    }

    fn run_for(addr: u64, from: u64, to: u64) {
        for n in from..to {
            set_passes(addr, n);
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    #[test]
    fn a_simulated_switchover_is_measured() {
        let (src, dst) = (Page::new(), Page::new());
        let sampler = Sampler::start(src.source()).unwrap();
        run_for(src.addr(), 1, 50);
        // Precopy: an old copy of the counters reaches the destination.
        set_passes(dst.addr(), 20);
        sampler.attach_destination(dst.source());
        run_for(src.addr(), 50, 100);
        // Paused; the last copy; then the guest runs on the destination.
        set_passes(dst.addr(), 99);
        std::thread::sleep(Duration::from_millis(5));
        run_for(dst.addr(), 100, 150);
        let rec = sampler.finish(Duration::from_millis(5), Duration::from_secs(30));
        assert!(rec.samples > 0);
        let src_last = rec.sides[0].last_progress.unwrap();
        let dst_first = rec.sides[1].first_progress.unwrap();
        // The copies (20, 99) never counted as the destination running.
        assert!(dst_first > src_last, "{rec:?}");
        let d = rec.guest_downtime(1_000_000_000).unwrap();
        assert!(d.downtime_us > 0);
        assert!(d.resolution_us > 0);
        assert_eq!(d.tsc_gap_us, None);
    }

    #[test]
    fn a_page_without_status_is_refused() {
        let page = vec![0u8; PAGE_SIZE];
        let src = ProcessMemory::new(std::process::id(), page.as_ptr() as u64);
        let err = Sampler::start(Box::new(src)).err().unwrap();
        assert!(err.to_string().contains("magic"), "{err}");
    }
}
