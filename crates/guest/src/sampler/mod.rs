//! Guest-visible downtime to the microsecond: host threads that sample
//! the guests' pass counters ([`crate::status::VcpuSlot`]) on both sides of
//! a migration, as often as they can, and the rule that turns what they saw
//! into the longest time in which the guest made no progress anywhere.
//!
//! The threads run at real-time priority (SCHED_FIFO) when the host lets
//! them, so busy vCPUs cannot starve them; one is pinned to each of up to
//! [`MAX_THREADS`] CPUs, so a CPU that stops for a while (the host's own
//! scheduling) pauses one of them, not the measurement. They sleep between
//! samples (they never spin), aiming together at one sample every
//! [`PERIOD`]. Ferry and the QEMU yardstick measure the same way; only the
//! [`StatusSource`] differs.

mod fields;
mod recording;
mod source;
mod timeline;
mod worker;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use fields::DowntimeFields;
pub use recording::{COARSE_US, GuestDowntime, NoDowntime, Recording, Side, SideRecord};
pub use source::{MappedFile, ProcessMemory, ReadStatusError, StatusSource, read_status};
pub use timeline::{Highest, Observed, Timeline};

use crate::status;
use worker::Shared;

/// The interval the sampler aims at between two samples (of all its
/// threads together). Each sample preempts a vCPU, which costs a kvm-pvm
/// vCPU a full exit: at 25 us the preemptions stalled guests for tens of
/// milliseconds (docs/MIGRATION.md, "The sampler must not disturb").
pub const PERIOD: Duration = Duration::from_micros(100);
/// At most this many sampling threads, each on its own CPU.
pub const MAX_THREADS: usize = 2;
/// Real-time priority of the sampling threads (SCHED_FIFO, 1-99): above
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

/// A running sampler; [`Sampler::finish`] stops it and returns its record.
pub struct Sampler {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<bool>>,
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
    pub fn start(source: Box<dyn StatusSource>) -> Result<Sampler, SamplerError> {
        let st = read_status(source.as_ref())?;
        let rec = Recording {
            tsc_khz: st.tsc_khz,
            sides: [
                SideRecord {
                    attached_at: Some(monotonic_ns()),
                    ..SideRecord::default()
                },
                SideRecord::default(),
            ],
            ..Recording::default()
        };
        let vcpus = (st.vcpus as usize).clamp(1, status::MAX_SLOTS);
        let shared = Arc::new(Shared::new(Arc::from(source), vcpus, rec));
        let cpus = worker::allowed_cpus();
        let n = cpus.len().clamp(1, MAX_THREADS);
        let mut sampler = Sampler {
            shared,
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let shared = sampler.shared.clone();
            let cpu = cpus.get(i).copied();
            let t = std::thread::Builder::new()
                .name(format!("guest-sampler-{i}"))
                .spawn(move || worker::run(&shared, cpu, i, n))
                .map_err(SamplerError::Thread)?;
            sampler.threads.push(t);
        }
        Ok(sampler)
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
        // Real-time only if every thread was.
        let mut realtime = !self.threads.is_empty();
        for t in self.threads.drain(..) {
            realtime &= t.join().unwrap_or(false);
        }
        let mut state = lock(&self.shared.state);
        state.rec.realtime = realtime;
        std::mem::take(&mut state.rec)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
        }
    }
}

/// Locks `m`, also after a panic elsewhere (the data stays consistent:
/// every update is a few plain assignments).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds the destination to a running [`Sampler`] (cheap to clone, `Send`).
#[derive(Clone)]
pub struct Attacher(Arc<Shared>);

impl Attacher {
    /// Adds the destination's status page (read from the next sample on).
    pub fn attach_destination(&self, destination: Box<dyn StatusSource>) {
        self.0.attach(Side::Destination, Arc::from(destination));
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

    /// Counts the reads of a page.
    struct Counted(Box<dyn StatusSource>, Arc<std::sync::atomic::AtomicU64>);

    impl StatusSource for Counted {
        fn read(&self, offset: usize, buf: &mut [u8]) -> io::Result<()> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.read(offset, buf)
        }
    }

    #[test]
    fn the_source_is_no_longer_read_once_the_destination_ran() {
        let (src, dst) = (Page::new(), Page::new());
        let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Counted(src.source(), reads.clone());
        let sampler = Sampler::start(Box::new(counted)).unwrap();
        run_for(src.addr(), 1, 20);
        set_passes(dst.addr(), 19);
        sampler.attach_destination(dst.source());
        run_for(dst.addr(), 20, 40);
        while sampler.shared.resumed_at.load(Ordering::Acquire) == 0 {
            run_for(dst.addr(), 40, 41);
        }
        // A thread may be inside one more read of the source.
        let seen = reads.load(Ordering::Relaxed);
        run_for(dst.addr(), 41, 100);
        assert!(reads.load(Ordering::Relaxed) <= seen + MAX_THREADS as u64);
        let rec = sampler.finish(Duration::from_millis(1), Duration::from_secs(30));
        assert!(rec.sides[1].first_progress.unwrap() > rec.sides[0].last_progress.unwrap());
    }

    #[test]
    fn a_page_without_status_is_refused() {
        let page = vec![0u8; PAGE_SIZE];
        let src = ProcessMemory::new(std::process::id(), page.as_ptr() as u64);
        let err = Sampler::start(Box::new(src)).err().unwrap();
        assert!(err.to_string().contains("magic"), "{err}");
    }
}
