//! The fake source VM: memory, the guest thread, dirty bits, pause and resume.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress,
};
use vmstate::{VmConfig, VmState};

use super::guest::{Ctl, RunState, Shared, guest_loop, write_page};
use super::spec::FakeSpec;
use super::{fake_err, fake_state};
use crate::bitmap::{DirtyBitmap, PAGE_SIZE, PageLayout};
use crate::vm::{SourceVm, VmError};

/// Failures the fake source VM can be told to produce.
#[derive(Clone, Debug, Default)]
pub struct FakeFaults {
    pub fail_start_dirty_log: bool,
    pub fail_pause: bool,
    pub fail_save_state: bool,
    /// Fail the n-th harvest (1-based).
    pub fail_harvest: Option<u32>,
    /// Pages the guest writes as it is paused (the first ones of memory):
    /// a real guest's last writes between a harvest and the pause, here
    /// whatever the scheduler does.
    pub writes_at_pause: u64,
}

/// The fake source VM.
pub struct FakeVm {
    config: VmConfig,
    memory: GuestMemoryMmap,
    layout: Arc<PageLayout>,
    shared: Arc<Shared>,
    guest: Option<JoinHandle<()>>,
    hint: bool,
    initially_all_dirty: bool,
    logging: bool,
    harvests: u32,
    pub faults: FakeFaults,
    /// Every call the engine made, in order.
    pub calls: Vec<&'static str>,
}

impl FakeVm {
    /// Creates the VM, prefills memory, and starts the guest thread.
    pub fn new(spec: FakeSpec) -> Result<FakeVm, VmError> {
        let layout = PageLayout::new(&spec.regions)?;
        let ranges: Vec<_> = spec
            .regions
            .iter()
            .map(|&(s, l)| (GuestAddress(s), l as usize))
            .collect();
        let memory = GuestMemoryMmap::from_ranges(&ranges)?;
        let words = (layout.index_len() / 64) as usize;
        let shared = Arc::new(Shared {
            dirty: (0..words).map(|_| AtomicU64::new(0)).collect(),
            ctl: Mutex::new(Ctl {
                state: RunState::Running,
                stop: false,
            }),
            cv: Condvar::new(),
            writes: AtomicU64::new(0),
            throttle: AtomicU64::new(0f64.to_bits()),
        });
        // Every real page, in address order.
        let all: Vec<(u64, u64)> = layout
            .regions()
            .iter()
            .flat_map(|r| (0..r.pages).map(move |p| (r.first_index + p, r.gpa + p * PAGE_SIZE)))
            .collect();
        let total = all.len() as u64;
        if spec.prefill_pages > 0 {
            let step = (total / spec.prefill_pages.min(total)).max(1);
            for (n, &(idx, gpa)) in all.iter().step_by(step as usize).enumerate() {
                if n as u64 >= spec.prefill_pages {
                    break;
                }
                write_page(&memory, &shared, idx, gpa, 0)?;
            }
        }
        let ws: Vec<(u64, u64)> = all
            .into_iter()
            .take(spec.working_set_pages.max(1) as usize)
            .collect();
        let guest = {
            let memory = memory.clone();
            let shared = Arc::clone(&shared);
            let spec = spec.clone();
            std::thread::Builder::new()
                .name("fake-guest".into())
                .spawn(move || guest_loop(memory, shared, ws, spec))?
        };
        let config = VmConfig {
            memory_bytes: layout.bytes(),
            vcpus: spec.vcpus,
            regions: spec.regions.clone(),
            cmdline: format!("fake writes_per_sec={}", spec.writes_per_sec),
            kernel: "fake".into(),
            tsc_khz: 1_000_000,
        };
        Ok(FakeVm {
            config,
            memory,
            layout,
            shared,
            guest: Some(guest),
            hint: spec.nonzero_hint,
            initially_all_dirty: spec.initially_all_dirty,
            logging: false,
            harvests: 0,
            faults: FakeFaults::default(),
            calls: Vec::new(),
        })
    }

    /// Current run state.
    pub fn run_state(&self) -> RunState {
        self.shared.lock().state
    }

    /// Page writes the guest has done so far.
    pub fn writes(&self) -> u64 {
        self.shared.writes.load(Ordering::Relaxed)
    }

    /// Waits until the guest has done at least `n` writes (or `timeout` passed).
    pub fn wait_for_writes(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.writes() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// The current throttle fraction (0 = full speed).
    pub fn throttle_fraction(&self) -> f64 {
        f64::from_bits(self.shared.throttle.load(Ordering::Relaxed))
    }

    /// The layout of the fake's memory.
    pub fn layout(&self) -> &Arc<PageLayout> {
        &self.layout
    }

    /// The token the fake puts in its saved state (checked on the destination).
    pub fn state_token(&self) -> Vec<u8> {
        format!("fake-vm-state:{}", self.config.cmdline).into_bytes()
    }
}

impl Drop for FakeVm {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.cv.notify_all();
        if let Some(g) = self.guest.take() {
            let _ = g.join();
        }
    }
}

impl SourceVm for FakeVm {
    fn config(&self) -> VmConfig {
        self.config.clone()
    }

    fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    fn start_dirty_log(&mut self) -> Result<(), VmError> {
        self.calls.push("start_dirty_log");
        if self.faults.fail_start_dirty_log {
            return Err(fake_err("injected: dirty log unavailable"));
        }
        let initial = if self.initially_all_dirty { !0 } else { 0 };
        for w in &self.shared.dirty {
            w.store(initial, Ordering::SeqCst);
        }
        self.logging = true;
        Ok(())
    }

    fn harvest_dirty(&mut self, into: &mut DirtyBitmap) -> Result<(), VmError> {
        self.harvests += 1;
        if self.faults.fail_harvest == Some(self.harvests) {
            return Err(fake_err("injected: harvest failed"));
        }
        if !self.logging {
            return Err(fake_err("harvest without dirty logging"));
        }
        for (dst, src) in into.words_mut().iter_mut().zip(&self.shared.dirty) {
            *dst |= src.swap(0, Ordering::SeqCst);
        }
        Ok(())
    }

    fn stop_dirty_log(&mut self) -> Result<(), VmError> {
        self.calls.push("stop_dirty_log");
        self.logging = false;
        Ok(())
    }

    fn pause(&mut self) -> Result<(), VmError> {
        self.calls.push("pause");
        if self.faults.fail_pause {
            return Err(fake_err("injected: pause failed"));
        }
        let mut ctl = self.shared.lock();
        if ctl.state == RunState::Retired {
            return Err(fake_err("pause of a retired VM"));
        }
        if ctl.state == RunState::Running {
            for idx in 0..self.faults.writes_at_pause.min(self.layout.index_len()) {
                if let Some(gpa) = self.layout.gpa_of(idx) {
                    write_page(&self.memory, &self.shared, idx, gpa, u64::MAX - idx)?;
                }
            }
        }
        ctl.state = RunState::Paused;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), VmError> {
        self.calls.push("resume");
        let mut ctl = self.shared.lock();
        if ctl.state == RunState::Retired {
            return Err(fake_err("resume of a retired VM"));
        }
        ctl.state = RunState::Running;
        self.shared.cv.notify_all();
        Ok(())
    }

    fn save_state(&mut self) -> Result<VmState, VmError> {
        self.calls.push("save_state");
        if self.faults.fail_save_state {
            return Err(fake_err("injected: state capture failed"));
        }
        if self.run_state() != RunState::Paused {
            return Err(fake_err("save_state of a running VM"));
        }
        Ok(fake_state(&self.config, self.state_token()))
    }

    fn retire(&mut self) {
        self.calls.push("retire");
        self.shared.lock().state = RunState::Retired;
    }

    fn take_back(&mut self, state: VmState) -> Result<(), VmError> {
        self.calls.push("take_back");
        if state.devices.serial.pending_line != self.state_token() {
            return Err(fake_err("take_back from another VM's state"));
        }
        let mut ctl = self.shared.lock();
        if ctl.state != RunState::Retired {
            return Err(fake_err("take_back of a VM that was not retired"));
        }
        ctl.state = RunState::Running;
        self.shared.cv.notify_all();
        Ok(())
    }

    fn release(&mut self) {
        // The fake keeps its memory, for tests to compare.
        self.calls.push("release");
    }

    fn throttle(&mut self, fraction: f64) -> Result<bool, VmError> {
        self.calls.push("throttle");
        self.shared
            .throttle
            .store(fraction.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
        Ok(true)
    }

    fn is_running(&self) -> bool {
        self.run_state() == RunState::Running
    }

    fn nonzero_hint(&self, into: &mut DirtyBitmap) -> bool {
        // The regions match the bitmap's layout: both come from one config.
        self.hint
            && self.memory.iter().enumerate().all(|(i, r)| {
                let (Ok(host), Some(words)) = (
                    r.get_host_address(MemoryRegionAddress(0)),
                    into.region_words_mut(i),
                ) else {
                    return false;
                };
                vmstate::resident_pages(host, r.len() as usize, words).is_ok()
            })
    }
}
