//! The VMM seen through the migration engine's traits.

use std::sync::Arc;
use std::time::Duration;

use api::events::{Cause, EventKind};
use migrate::{
    Capture, DestinationVm, DirtyBitmap, Fence, PostcopyMemory, SourceVm, TxnVm, VmError, VmFactory,
};
use vm_memory::GuestMemoryMmap;
use vmm::postcopy::Userfault;
use vmstate::{VmConfig, VmState};

use crate::events::EventHub;

/// The running VM on the source side.
pub struct Source<'a> {
    pub vm: &'a vmm::Vm,
    /// Per-region scratch for KVM's dirty bitmaps.
    scratch: Vec<Vec<u64>>,
    /// Where the engine's pauses and resumes are told.
    events: Option<Arc<EventHub>>,
}

impl<'a> Source<'a> {
    pub fn new(vm: &'a vmm::Vm) -> Self {
        Source {
            vm,
            scratch: vec![Vec::new(); vm.config().regions.len()],
            events: None,
        }
    }

    /// Publishes the VM's pauses and resumes to `events`.
    pub fn with_events(mut self, events: Arc<EventHub>) -> Self {
        self.events = Some(events);
        self
    }

    /// Publishes `kind` if the VM's run state changed from `before`.
    fn tell(&self, before: vmm::RunState, kind: EventKind) {
        if let Some(events) = &self.events
            && self.vm.run_state() != before
        {
            events.publish(kind);
        }
    }
}

impl SourceVm for Source<'_> {
    fn config(&self) -> VmConfig {
        self.vm.config().clone()
    }

    fn memory(&self) -> &GuestMemoryMmap {
        self.vm.memory()
    }

    fn start_dirty_log(&mut self) -> Result<(), VmError> {
        Ok(self.vm.start_dirty_log()?)
    }

    fn harvest_dirty(&mut self, into: &mut DirtyBitmap) -> Result<(), VmError> {
        harvest(self.vm, &mut self.scratch, into)
    }

    fn stop_dirty_log(&mut self) -> Result<(), VmError> {
        Ok(self.vm.stop_dirty_log()?)
    }

    fn pause(&mut self) -> Result<(), VmError> {
        let before = self.vm.run_state();
        self.vm.pause()?;
        self.tell(
            before,
            EventKind::VmPaused {
                cause: Cause::Migration,
            },
        );
        Ok(())
    }

    fn resume(&mut self) -> Result<(), VmError> {
        let before = self.vm.run_state();
        self.vm.resume()?;
        self.tell(
            before,
            EventKind::VmResumed {
                cause: Cause::Migration,
            },
        );
        Ok(())
    }

    fn save_state(&mut self) -> Result<VmState, VmError> {
        Ok(self.vm.save_state()?)
    }

    fn retire(&mut self) {
        self.vm.retire();
    }

    fn release(&mut self) {
        self.vm.release_memory();
    }

    fn is_running(&self) -> bool {
        self.vm.run_state() == vmm::RunState::Running
    }

    fn throttle(&mut self, fraction: f64) -> Result<bool, VmError> {
        self.vm.set_throttle(fraction)?;
        Ok(true)
    }

    fn take_back(&mut self, state: VmState) -> Result<(), VmError> {
        self.vm.take_back(&state)?;
        if let Some(events) = &self.events {
            events.publish(EventKind::VmResumed {
                cause: Cause::Migration,
            });
        }
        Ok(())
    }

    fn nonzero_hint(&self, into: &mut DirtyBitmap) -> bool {
        (0..self.vm.host_regions().len()).all(|region| {
            into.region_words_mut(region)
                .is_some_and(|words| self.vm.data_pages(region, words).is_ok())
        })
    }
}

/// ORs the pages `vm` dirtied since the last harvest into `into`.
fn harvest(vm: &vmm::Vm, scratch: &mut [Vec<u64>], into: &mut DirtyBitmap) -> Result<(), VmError> {
    for s in scratch.iter_mut() {
        s.iter_mut().for_each(|w| *w = 0);
    }
    vm.harvest_dirty(scratch)?;
    for (region, words) in scratch.iter().enumerate() {
        let dst = into
            .region_words_mut(region)
            .ok_or("dirty bitmap has fewer regions than the VM")?;
        for (d, s) in dst.iter_mut().zip(words) {
            *d |= s;
        }
    }
    Ok(())
}

/// The pages of `set` as guest-physical ranges, neighbours merged.
fn ranges(set: &DirtyBitmap) -> Result<Vec<(u64, u64)>, VmError> {
    let layout = set.layout();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (first, n) in set.runs() {
        for i in first..first + n {
            let gpa = layout.gpa_of(i).ok_or("page outside guest memory")?;
            match out.last_mut() {
                Some((g, len)) if *g + *len == gpa => *len += migrate::PAGE_SIZE,
                _ => out.push((gpa, migrate::PAGE_SIZE)),
            }
        }
    }
    Ok(out)
}

/// Called with an incoming VM once its memory exists.
pub type OnCreate = Box<dyn FnMut(&vmm::Vm) + Send>;

/// Builds incoming VMs with the VMM.
pub struct Factory {
    pub serial: Option<vmm::SerialSink>,
    /// Told about the incoming VM once its memory exists (before any page
    /// arrives), e.g. so the API can say where its status page is.
    pub on_create: Option<OnCreate>,
    /// Where the incoming VM's fences (post-copy lease) are told.
    pub events: Option<Arc<EventHub>>,
    /// The shared file its guest memory lives in (`None`: anonymous), so
    /// that a migration onward survives this process (docs/SAFETY.md).
    pub memory_file: Option<Arc<std::fs::File>>,
}

/// An incoming VM.
pub struct Incoming {
    /// Shared with its post-copy transactions.
    pub vm: Arc<vmm::Vm>,
    /// Where its fences are told.
    events: Option<Arc<EventHub>>,
    /// Stale pages were discarded already (Stale, while it ran on the source).
    stale_dropped: bool,
}

impl VmFactory for Factory {
    type Vm = Incoming;

    fn create(&mut self, config: &VmConfig) -> Result<Incoming, VmError> {
        let serial = self
            .serial
            .take()
            .ok_or("this receiver already created its VM")?;
        let vm = vmm::Vm::for_restore_in(config, serial, self.memory_file.clone())?;
        if let Some(f) = self.on_create.as_mut() {
            f(&vm);
        }
        Ok(Incoming {
            vm: Arc::new(vm),
            events: self.events.clone(),
            stale_dropped: false,
        })
    }
}

impl DestinationVm for Incoming {
    fn memory(&self) -> &GuestMemoryMmap {
        self.vm.memory()
    }

    fn restore_state(&mut self, state: VmState) -> Result<(), VmError> {
        let vm = Arc::get_mut(&mut self.vm).ok_or("the incoming VM is shared before its state")?;
        Ok(vm.restore_state(&state)?)
    }

    fn resume(&mut self) -> Result<(), VmError> {
        Ok(self.vm.resume()?)
    }

    fn discard(self) {
        drop(self.vm);
    }

    fn supports_postcopy(&self) -> bool {
        vmm::postcopy::available()
            && self
                .vm
                .memory_file()
                .is_none_or(|f| vmm::postcopy::backs_postcopy(f))
    }

    fn discard_stale(&mut self, stale: &DirtyBitmap) -> Result<bool, VmError> {
        self.vm.discard_pages(&ranges(stale)?)?;
        self.stale_dropped = true;
        Ok(true)
    }

    fn start_postcopy(
        &mut self,
        missing: &DirtyBitmap,
    ) -> Result<Arc<dyn PostcopyMemory>, VmError> {
        let uf = self
            .vm
            .start_postcopy(&ranges(missing)?, self.stale_dropped)?;
        Ok(Arc::new(Pages(uf)))
    }

    fn transactions(&self) -> Option<Arc<dyn TxnVm>> {
        Some(Arc::new(Txns {
            scratch: std::sync::Mutex::new(vec![Vec::new(); self.vm.config().regions.len()]),
            vm: Arc::clone(&self.vm),
        }))
    }

    fn fence(&self) -> Option<Arc<dyn Fence>> {
        Some(Arc::new(Fenced {
            vm: self.vm.fence_handle(),
            events: self.events.clone(),
        }))
    }
}

/// How long a fence waits for the vCPUs to leave the guest before it
/// reports the ones that have not (waiting for a page, they run no guest code).
const FENCE_WAIT: Duration = Duration::from_millis(100);

/// The VMM's fence, told as pauses and resumes caused by the lease.
struct Fenced {
    vm: vmm::FenceHandle,
    events: Option<Arc<EventHub>>,
}

impl Fence for Fenced {
    fn fence(&self) -> Result<(), VmError> {
        if !self.vm.fence(FENCE_WAIT) {
            tracing::warn!(
                "fenced: some vCPUs have not left the guest yet (each waits for a missing page)"
            );
        }
        if let Some(e) = &self.events {
            e.publish(EventKind::VmPaused {
                cause: Cause::Lease,
            });
        }
        Ok(())
    }

    fn lift(&self, run: bool) -> Result<(), VmError> {
        self.vm.lift(run)?;
        if let Some(e) = &self.events
            && run
        {
            e.publish(EventKind::VmResumed {
                cause: Cause::Lease,
            });
        }
        Ok(())
    }
}

/// The VMM's dirty log, checkpoints and held serial output, for post-copy
/// transactions.
struct Txns {
    vm: Arc<vmm::Vm>,
    scratch: std::sync::Mutex<Vec<Vec<u64>>>,
}

impl TxnVm for Txns {
    fn begin(&self) -> Result<(), VmError> {
        self.vm.start_dirty_log()?;
        // The first harvest may report every page (initially set): drop it.
        let mut all = vec![Vec::new(); self.vm.config().regions.len()];
        self.vm.harvest_dirty(&mut all)?;
        self.vm.hold_serial();
        Ok(())
    }

    fn capture(
        &self,
        wait: Duration,
        dirty: &mut DirtyBitmap,
        at_pause: &mut dyn FnMut(&GuestMemoryMmap, &DirtyBitmap),
    ) -> Result<Option<Capture>, VmError> {
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let taken = self.vm.checkpoint(wait, |vm| -> Result<Capture, VmError> {
            harvest(vm, &mut scratch, dirty)?;
            at_pause(vm.memory(), dirty);
            Ok(Capture {
                state: vm.save_state()?,
                output_mark: vm.serial_mark(),
            })
        })?;
        taken.transpose()
    }

    fn release_output(&self, mark: Option<u64>) {
        self.vm.release_serial(mark);
        if mark.is_none() {
            let _ = self.vm.stop_dirty_log();
        }
    }
}

/// The VMM's userfaultfd memory through the engine's trait.
struct Pages(Arc<Userfault>);

impl PostcopyMemory for Pages {
    fn wait_fault(&self, timeout: Duration) -> Result<Option<u64>, VmError> {
        Ok(self.0.wait_fault(timeout)?)
    }

    fn install(&self, gpa: u64, data: &[u8]) -> Result<(), VmError> {
        Ok(self.0.install(gpa, data)?)
    }

    fn install_zero(&self, gpa: u64, pages: u64) -> Result<(), VmError> {
        Ok(self.0.install_zero(gpa, pages)?)
    }

    fn finish(&self) -> Result<(), VmError> {
        Ok(self.0.finish()?)
    }
}
