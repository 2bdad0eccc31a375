//! Post-copy in the fake destination: pages of the set are zeroed and
//! marked absent; a "guest" thread started at resume reads random pages and
//! reports a fault for each absent one, waiting until it is installed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::fake_err;
use crate::bitmap::{DirtyBitmap, PAGE_SIZE, PageLayout};
use crate::vm::{PostcopyMemory, VmError};

/// The fake's memory in post-copy.
pub struct FakePostcopy {
    memory: GuestMemoryMmap,
    layout: Arc<PageLayout>,
    present: Vec<AtomicU64>,
    faults: Mutex<VecDeque<u64>>,
    /// Signalled on every fault and every install.
    cv: Condvar,
    finished: AtomicBool,
    /// Pages installed over pages already present (must stay 0).
    pub overwrites: AtomicU64,
}

impl FakePostcopy {
    pub(super) fn new(
        memory: GuestMemoryMmap,
        layout: Arc<PageLayout>,
        missing: &DirtyBitmap,
    ) -> Result<Arc<Self>, VmError> {
        let zero = [0u8; PAGE_SIZE as usize];
        for (first, n) in missing.runs() {
            for i in first..first + n {
                let gpa = layout.gpa_of(i).ok_or("missing page outside memory")?;
                memory.write_slice(&zero, GuestAddress(gpa))?;
            }
        }
        let present = missing.words().iter().map(|w| AtomicU64::new(!w)).collect();
        Ok(Arc::new(FakePostcopy {
            memory,
            layout,
            present,
            faults: Mutex::new(VecDeque::new()),
            cv: Condvar::new(),
            finished: AtomicBool::new(false),
            overwrites: AtomicU64::new(0),
        }))
    }

    fn is_present(&self, i: u64) -> bool {
        self.present[(i / 64) as usize].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    fn set_present(&self, i: u64) -> bool {
        let old = self.present[(i / 64) as usize].fetch_or(1 << (i % 64), Ordering::AcqRel);
        old & (1 << (i % 64)) != 0
    }

    /// Reads page `i` as a vCPU would: if absent, faults and waits (up to
    /// `limit`) for it. Returns false if it never came.
    pub fn touch(&self, i: u64, limit: Duration) -> bool {
        if self.is_present(i) || self.finished.load(Ordering::SeqCst) {
            return true;
        }
        let Some(gpa) = self.layout.gpa_of(i) else {
            return true;
        };
        let deadline = Instant::now() + limit;
        let mut q = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back(gpa);
        self.cv.notify_all();
        while !self.is_present(i) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = self
                .cv
                .wait_timeout(q, left.min(Duration::from_millis(10)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// As a vCPU that faults the instant it starts: reports the first
    /// absent page and returns once the fault was taken (or after 1 s),
    /// plus a moment for whoever took it to act on it.
    pub(super) fn fault_at_once(&self) {
        let Some(gpa) = (0..self.layout.index_len())
            .find(|&i| !self.is_present(i))
            .and_then(|i| self.layout.gpa_of(i))
        else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut q = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back(gpa);
        self.cv.notify_all();
        while !q.is_empty() && Instant::now() < deadline {
            q = self
                .cv
                .wait_timeout(q, Duration::from_millis(10))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(q);
        std::thread::sleep(Duration::from_millis(20));
    }

    fn put(&self, gpa: u64, pages: u64, data: Option<&[u8]>) -> Result<(), VmError> {
        let first = self
            .layout
            .check_range(gpa, pages * PAGE_SIZE)
            .ok_or_else(|| fake_err("install outside guest memory"))?;
        let zero = [0u8; PAGE_SIZE as usize];
        for k in 0..pages {
            let i = first + k;
            if self.is_present(i) {
                // As UFFDIO_COPY's EEXIST: left as it is.
                if data.is_some() {
                    self.overwrites.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            let page = match data {
                Some(d) => &d[(k * PAGE_SIZE) as usize..((k + 1) * PAGE_SIZE) as usize],
                None => &zero[..],
            };
            self.memory
                .write_slice(page, GuestAddress(gpa + k * PAGE_SIZE))?;
            self.set_present(i);
        }
        let _q = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        self.cv.notify_all();
        Ok(())
    }
}

impl PostcopyMemory for FakePostcopy {
    fn wait_fault(&self, timeout: Duration) -> Result<Option<u64>, VmError> {
        let mut q = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        if q.is_empty() {
            q = self
                .cv
                .wait_timeout(q, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(q.pop_front())
    }

    fn install(&self, gpa: u64, data: &[u8]) -> Result<(), VmError> {
        self.put(gpa, data.len() as u64 / PAGE_SIZE, Some(data))
    }

    fn install_zero(&self, gpa: u64, pages: u64) -> Result<(), VmError> {
        self.put(gpa, pages, None)
    }

    fn finish(&self) -> Result<(), VmError> {
        let missing: u64 = self
            .present
            .iter()
            .map(|w| u64::from((!w.load(Ordering::Acquire)).count_ones()))
            .sum();
        let padding = self.layout.index_len() - self.layout.pages();
        if missing != padding {
            return Err(fake_err("finish with pages still absent"));
        }
        self.finished.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// The fake destination guest: reads `touches` random pages, one every
/// `every`, each waiting for its page if absent. Counts what it waited on.
pub(super) fn toucher(
    mem: Arc<FakePostcopy>,
    touches: u32,
    every: Duration,
    waited: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let pages = mem.layout.index_len();
    for _ in 0..touches {
        if stop.load(Ordering::SeqCst) || mem.finished.load(Ordering::SeqCst) {
            return;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let i = rng % pages;
        if !mem.is_present(i) {
            waited.fetch_add(1, Ordering::Relaxed);
        }
        if !mem.touch(i, Duration::from_secs(5)) {
            return;
        }
        std::thread::sleep(every);
    }
}
