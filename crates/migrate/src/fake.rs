//! An in-memory VM for testing the engine without KVM: real guest memory
//! (`GuestMemoryMmap`), a "guest" thread that writes pages at a set rate
//! with content derived from (page, generation) and records its own dirty
//! bits, and pause/resume that stop that thread at a write boundary. The
//! destination side records what the engine did to it (created, restored,
//! resumed, discarded) so tests can check that nothing ran before Commit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress,
};
use vmstate::{DeviceState, IrqchipState, STATE_VERSION, VcpuState, VmConfig, VmState};

use crate::bitmap::{DirtyBitmap, PAGE_SIZE, PageLayout};
use crate::vm::{DestinationVm, SourceVm, VmError, VmFactory};

/// Which pages of the working set the fake guest writes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WritePattern {
    /// Every page equally likely.
    Uniform,
    /// Page after page, wrapping around.
    Sequential,
    /// `hot_share` of the writes go to the first `hot_fraction` of the working set.
    HotSet { hot_fraction: f64, hot_share: f64 },
}

/// What the fake guest looks like.
#[derive(Clone, Debug)]
pub struct FakeSpec {
    /// RAM regions (start, length).
    pub regions: Vec<(u64, u64)>,
    pub vcpus: u32,
    /// Pages filled with data before the migration starts (spread evenly).
    pub prefill_pages: u64,
    /// The guest writes the first `working_set_pages` pages of memory.
    pub working_set_pages: u64,
    pub pattern: WritePattern,
    /// Page writes per second (0 = idle).
    pub writes_per_sec: u64,
    pub seed: u64,
    /// Whether [`SourceVm::nonzero_hint`] is offered.
    pub nonzero_hint: bool,
    /// Report every page dirty right after `start_dirty_log`, as KVM does
    /// with KVM_DIRTY_LOG_INITIALLY_SET.
    pub initially_all_dirty: bool,
}

impl FakeSpec {
    /// `mib` MiB of RAM in one region at 0, a quarter prefilled, idle.
    pub fn new(mib: u64) -> Self {
        let pages = mib * 256;
        FakeSpec {
            regions: vec![(0, mib << 20)],
            vcpus: 1,
            prefill_pages: pages / 4,
            working_set_pages: pages / 8,
            pattern: WritePattern::Uniform,
            writes_per_sec: 0,
            seed: 1,
            nonzero_hint: false,
            initially_all_dirty: false,
        }
    }
}

/// Failures the fake source VM can be told to produce.
#[derive(Clone, Debug, Default)]
pub struct FakeFaults {
    pub fail_start_dirty_log: bool,
    pub fail_pause: bool,
    pub fail_save_state: bool,
    /// Fail the n-th harvest (1-based).
    pub fail_harvest: Option<u32>,
}

/// Run state of the fake source VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    /// Handed over to the destination: will never run again.
    Retired,
}

struct Ctl {
    state: RunState,
    stop: bool,
}

struct Shared {
    dirty: Vec<AtomicU64>,
    ctl: Mutex<Ctl>,
    cv: Condvar,
    writes: AtomicU64,
    /// Throttle fraction as f64 bits (0 = full speed).
    throttle: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ctl> {
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }
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

/// Content the guest stores in `page` at generation `generation`.
pub fn pattern_word(page: u64, generation: u64, word: u64) -> u64 {
    let mut x = page.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ generation.rotate_left(17) ^ word;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29) | 1
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
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

fn write_page(
    memory: &GuestMemoryMmap,
    shared: &Shared,
    idx: u64,
    gpa: u64,
    generation: u64,
) -> Result<(), VmError> {
    // A header word and 8 words at a generation-dependent offset.
    let mut block = [0u8; 64];
    for (k, chunk) in block.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&pattern_word(idx, generation, k as u64).to_le_bytes());
    }
    let off = 64 + (generation % 62) * 64;
    memory.write_slice(&generation.to_le_bytes(), GuestAddress(gpa))?;
    memory.write_slice(&block, GuestAddress(gpa + off))?;
    let (w, b) = ((idx / 64) as usize, idx % 64);
    shared.dirty[w].fetch_or(1 << b, Ordering::SeqCst);
    Ok(())
}

fn guest_loop(memory: GuestMemoryMmap, shared: Arc<Shared>, ws: Vec<(u64, u64)>, spec: FakeSpec) {
    let tick = Duration::from_millis(1);
    let per_tick = spec.writes_per_sec as f64 / 1000.0;
    let mut credit = 0.0f64;
    let mut rng = spec.seed.max(1);
    let mut generation = 1u64;
    let mut seq = 0usize;
    let mut next = Instant::now();
    loop {
        {
            let mut ctl = shared.lock();
            while ctl.state != RunState::Running && !ctl.stop {
                ctl = shared.cv.wait(ctl).unwrap_or_else(|p| p.into_inner());
                next = Instant::now();
            }
            if ctl.stop {
                return;
            }
            // Writes happen with the lock held, so pause() waits for a write boundary.
            let throttle = f64::from_bits(shared.throttle.load(Ordering::Relaxed));
            credit += per_tick * (1.0 - throttle).clamp(0.0, 1.0);
            while credit >= 1.0 && !ws.is_empty() {
                credit -= 1.0;
                let i = match spec.pattern {
                    WritePattern::Uniform => (xorshift(&mut rng) % ws.len() as u64) as usize,
                    WritePattern::Sequential => {
                        seq = (seq + 1) % ws.len();
                        seq
                    }
                    WritePattern::HotSet {
                        hot_fraction,
                        hot_share,
                    } => {
                        let hot = ((ws.len() as f64 * hot_fraction) as usize).clamp(1, ws.len());
                        let r = xorshift(&mut rng);
                        if (r % 10_000) as f64 / 10_000.0 < hot_share {
                            (xorshift(&mut rng) % hot as u64) as usize
                        } else {
                            (xorshift(&mut rng) % ws.len() as u64) as usize
                        }
                    }
                };
                let (idx, gpa) = ws[i];
                generation += 1;
                if write_page(&memory, &shared, idx, gpa, generation).is_err() {
                    return;
                }
                shared.writes.fetch_add(1, Ordering::Relaxed);
            }
        }
        next += tick;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

/// A VM state for `config` with default register contents and `token` in
/// the UART's pending line (so a test can see that the state arrived).
pub fn fake_state(config: &VmConfig, token: Vec<u8>) -> VmState {
    let mut devices = DeviceState::default();
    devices.serial.pending_line = token;
    VmState {
        version: STATE_VERSION,
        config: config.clone(),
        vcpus: (0..config.vcpus)
            .map(|id| VcpuState {
                id,
                cpuid: Vec::new(),
                mp_state: Default::default(),
                regs: Default::default(),
                sregs: Default::default(),
                xsave: Default::default(),
                xcrs: Default::default(),
                msrs: Vec::new(),
                lapic: Default::default(),
                events: Default::default(),
                debugregs: Default::default(),
            })
            .collect(),
        irqchip: IrqchipState {
            pic_master: Default::default(),
            pic_slave: Default::default(),
            ioapic: Default::default(),
            pit: Default::default(),
            clock: Default::default(),
        },
        devices,
    }
}

fn fake_err(msg: &str) -> VmError {
    msg.to_string().into()
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

/// What happened to destination VMs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestLog {
    pub created: u32,
    pub restored: u32,
    pub resumed: u32,
    pub discarded: u32,
    /// Set if `resume` was ever called before `restore`.
    pub resumed_before_restore: bool,
    /// The token found in the restored state.
    pub state_token: Option<Vec<u8>>,
}

/// Creates [`FakeDestVm`]s and logs what happens to them.
#[derive(Clone, Default)]
pub struct FakeFactory {
    pub log: Arc<Mutex<DestLog>>,
    pub fail_create: bool,
    pub fail_restore: bool,
}

impl FakeFactory {
    pub fn log(&self) -> DestLog {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The fake destination VM: memory plus a log.
pub struct FakeDestVm {
    memory: GuestMemoryMmap,
    log: Arc<Mutex<DestLog>>,
    restored: bool,
    fail_restore: bool,
}

impl VmFactory for FakeFactory {
    type Vm = FakeDestVm;

    fn create(&mut self, config: &VmConfig) -> Result<FakeDestVm, VmError> {
        if self.fail_create {
            return Err(fake_err("injected: cannot allocate guest memory"));
        }
        let ranges: Vec<_> = config
            .regions
            .iter()
            .map(|&(s, l)| (GuestAddress(s), l as usize))
            .collect();
        let memory = GuestMemoryMmap::from_ranges(&ranges)?;
        self.log.lock().unwrap_or_else(|p| p.into_inner()).created += 1;
        Ok(FakeDestVm {
            memory,
            log: Arc::clone(&self.log),
            restored: false,
            fail_restore: self.fail_restore,
        })
    }
}

impl DestinationVm for FakeDestVm {
    fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    fn restore(&mut self, state: VmState) -> Result<(), VmError> {
        if self.fail_restore {
            return Err(fake_err("injected: KVM refused the vCPU state"));
        }
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.restored += 1;
        log.state_token = Some(state.devices.serial.pending_line);
        self.restored = true;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), VmError> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if !self.restored {
            log.resumed_before_restore = true;
        }
        log.resumed += 1;
        Ok(())
    }

    fn discard(self) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).discarded += 1;
    }
}

/// First guest-physical address where two memories differ, if any.
pub fn first_difference(
    a: &GuestMemoryMmap,
    b: &GuestMemoryMmap,
    regions: &[(u64, u64)],
) -> Option<u64> {
    let mut x = vec![0u8; 1 << 20];
    let mut y = vec![0u8; 1 << 20];
    for &(start, len) in regions {
        let mut off = 0;
        while off < len {
            let n = (len - off).min(x.len() as u64) as usize;
            let gpa = start + off;
            if a.read_slice(&mut x[..n], GuestAddress(gpa)).is_err()
                || b.read_slice(&mut y[..n], GuestAddress(gpa)).is_err()
            {
                return Some(gpa);
            }
            if x[..n] != y[..n] {
                let i = x[..n]
                    .iter()
                    .zip(&y[..n])
                    .position(|(p, q)| p != q)
                    .unwrap_or(0);
                return Some(gpa + i as u64);
            }
            off += n as u64;
        }
    }
    None
}
