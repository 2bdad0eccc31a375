//! The fake destination: VMs that record what the engine did to them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmstate::{VmConfig, VmState};

use super::fake_err;
use super::postcopy::{FakePostcopy, toucher};
use crate::bitmap::{DirtyBitmap, PAGE_SIZE, PageLayout};
use crate::vm::{Capture, DestinationVm, Fence, PostcopyMemory, TxnVm, VmError, VmFactory};

/// What happened to destination VMs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestLog {
    pub created: u32,
    pub restored: u32,
    pub resumed: u32,
    pub discarded: u32,
    /// Set if `resume` was ever called before `restore_state`.
    pub resumed_before_restore: bool,
    /// The token found in the restored state.
    pub state_token: Option<Vec<u8>>,
    /// The VM switched to post-copy (and so may run before its memory
    /// arrived, and be discarded after it ran).
    pub switched: bool,
    /// Pages the VM ran without at the switch to post-copy.
    pub postcopy_pages: u64,
    /// Pages the source called stale during pre-copy (zeroed, as the VMM
    /// does: one never sent again shows in the memory).
    pub stale_pages: u64,
    /// Touches of absent pages by the fake guest after resume.
    pub postcopy_waits: u64,
    /// Times a lapsed post-copy lease fenced the VM, and times a grant
    /// lifted the fence.
    pub fenced: u32,
    pub lifted: u32,
    /// Transactions captured, and whether the held output was released
    /// for good (the VM is ours).
    pub captures: u32,
    pub output_released: bool,
}

/// Creates [`FakeDestVm`]s and logs what happens to them.
#[derive(Clone, Default)]
pub struct FakeFactory {
    pub log: Arc<Mutex<DestLog>>,
    pub fail_create: bool,
    pub fail_restore: bool,
    /// Its VMs cannot run before their memory has arrived.
    pub no_postcopy: bool,
    /// In post-copy, the fake guest reads this many random pages after
    /// resume, one every `touch_every`, waiting for absent ones.
    pub touches: u32,
    pub touch_every: Duration,
    /// Its VMs can send post-copy transactions (their guest writes nothing
    /// after resume: each carries the restored state and no pages).
    pub transactions: bool,
}

impl FakeFactory {
    pub fn log(&self) -> DestLog {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The restored state's config and token, once restored: what a
/// transaction carries.
type Restored = Arc<Mutex<Option<(VmConfig, Vec<u8>)>>>;

/// The fake destination VM: memory plus a log.
pub struct FakeDestVm {
    memory: GuestMemoryMmap,
    layout: Arc<PageLayout>,
    log: Arc<Mutex<DestLog>>,
    restored: bool,
    fail_restore: bool,
    no_postcopy: bool,
    touches: u32,
    touch_every: Duration,
    transactions: bool,
    /// The restored state (config and token), for transactions to carry.
    state: Restored,
    postcopy: Option<Arc<FakePostcopy>>,
    guest: Option<(JoinHandle<()>, Arc<AtomicBool>, Arc<AtomicU64>)>,
}

impl FakeDestVm {
    /// The post-copy memory, once the switch happened.
    pub fn postcopy(&self) -> Option<&Arc<FakePostcopy>> {
        self.postcopy.as_ref()
    }

    /// Stops the fake guest, if one runs; records what it waited on.
    fn stop_guest(&mut self) {
        if let Some((h, stop, waited)) = self.guest.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = h.join();
            self.log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .postcopy_waits += waited.load(Ordering::Relaxed);
        }
    }
}

impl Drop for FakeDestVm {
    fn drop(&mut self) {
        self.stop_guest();
    }
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
        let layout = PageLayout::new(&config.regions)?;
        self.log.lock().unwrap_or_else(|p| p.into_inner()).created += 1;
        Ok(FakeDestVm {
            memory,
            layout,
            log: Arc::clone(&self.log),
            restored: false,
            fail_restore: self.fail_restore,
            no_postcopy: self.no_postcopy,
            touches: self.touches,
            touch_every: self.touch_every,
            transactions: self.transactions,
            state: Arc::default(),
            postcopy: None,
            guest: None,
        })
    }
}

impl DestinationVm for FakeDestVm {
    fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    fn restore_state(&mut self, state: VmState) -> Result<(), VmError> {
        if self.fail_restore {
            return Err(fake_err("injected: KVM refused the vCPU state"));
        }
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.restored += 1;
        log.state_token = Some(state.devices.serial.pending_line.clone());
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((state.config, state.devices.serial.pending_line));
        self.restored = true;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), VmError> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if !self.restored {
            log.resumed_before_restore = true;
        }
        log.resumed += 1;
        drop(log);
        if let Some(mem) = &self.postcopy
            && self.touches > 0
        {
            let (mem, stop, waited) = (
                Arc::clone(mem),
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicU64::new(0)),
            );
            let (touches, every) = (self.touches, self.touch_every);
            let (s, w) = (Arc::clone(&stop), Arc::clone(&waited));
            let h = std::thread::Builder::new()
                .name("fake-dest-guest".into())
                .spawn(move || toucher(mem, touches, every, w, s))?;
            self.guest = Some((h, stop, waited));
            // A real vCPU may fault before resume returns: its page request
            // must still follow Resumed on the wire.
            if let Some(mem) = &self.postcopy {
                mem.fault_at_once();
            }
        }
        Ok(())
    }

    fn discard(mut self) {
        self.stop_guest();
        self.log.lock().unwrap_or_else(|p| p.into_inner()).discarded += 1;
    }

    fn supports_postcopy(&self) -> bool {
        !self.no_postcopy
    }

    fn discard_stale(&mut self, stale: &DirtyBitmap) -> Result<bool, VmError> {
        let zero = [0u8; PAGE_SIZE as usize];
        for i in stale.iter() {
            let gpa = self.layout.gpa_of(i).ok_or("stale page outside memory")?;
            self.memory.write_slice(&zero, GuestAddress(gpa))?;
        }
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stale_pages += stale.count();
        Ok(true)
    }

    fn start_postcopy(
        &mut self,
        missing: &DirtyBitmap,
    ) -> Result<Arc<dyn PostcopyMemory>, VmError> {
        if self.no_postcopy {
            return Err(fake_err("injected: no post-copy here"));
        }
        let mem = FakePostcopy::new(self.memory.clone(), Arc::clone(&self.layout), missing)?;
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.switched = true;
        log.postcopy_pages = missing.count();
        drop(log);
        self.postcopy = Some(Arc::clone(&mem));
        Ok(mem)
    }

    fn fence(&self) -> Option<Arc<dyn Fence>> {
        Some(Arc::new(FakeFence(Arc::clone(&self.log))))
    }

    fn transactions(&self) -> Option<Arc<dyn TxnVm>> {
        self.transactions.then(|| {
            Arc::new(FakeTxns {
                memory: self.memory.clone(),
                state: Arc::clone(&self.state),
                log: Arc::clone(&self.log),
            }) as Arc<dyn TxnVm>
        })
    }
}

/// Transactions of a fake guest that writes nothing after resume: the
/// restored state and no pages each time.
struct FakeTxns {
    memory: GuestMemoryMmap,
    state: Restored,
    log: Arc<Mutex<DestLog>>,
}

impl TxnVm for FakeTxns {
    fn begin(&self) -> Result<(), VmError> {
        Ok(())
    }

    fn capture(
        &self,
        _wait: Duration,
        dirty: &mut DirtyBitmap,
        at_pause: &mut dyn FnMut(&GuestMemoryMmap, &DirtyBitmap),
    ) -> Result<Option<Capture>, VmError> {
        let restored = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (config, token) = restored.ok_or("a transaction before the state was restored")?;
        at_pause(&self.memory, dirty);
        self.log.lock().unwrap_or_else(|p| p.into_inner()).captures += 1;
        Ok(Some(Capture {
            state: super::fake_state(&config, token),
            output_mark: 0,
        }))
    }

    fn release_output(&self, mark: Option<u64>) {
        if mark.is_none() {
            self.log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .output_released = true;
        }
    }
}

/// Records fences in the log.
struct FakeFence(Arc<Mutex<DestLog>>);

impl Fence for FakeFence {
    fn fence(&self) -> Result<(), VmError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).fenced += 1;
        Ok(())
    }

    fn lift(&self, _run: bool) -> Result<(), VmError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).lifted += 1;
        Ok(())
    }
}
