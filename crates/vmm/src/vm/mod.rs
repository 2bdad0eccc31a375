//! The virtual machine: KVM objects, guest memory, devices and vCPU threads.
//! Dirty-page tracking is in `dirty_log`; post-copy transactions
//! (checkpoints, taking a retired VM back, held serial output) in `txn`;
//! fencing a post-copy destination's vCPUs in `fence`.

mod dirty_log;
mod fence;
mod txn;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MEM_LOG_DIRTY_PAGES,
    KVM_PIT_SPEAKER_DUMMY, kvm_cpuid_entry2, kvm_irqchip, kvm_pit_config,
    kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;
use vmstate::{IrqchipState, STATE_VERSION, VmConfig, VmState};

use crate::devices::{Devices, SerialSink};
use crate::memory;
use crate::postcopy::Userfault;
use crate::throttle::{self, MAX_THROTTLE};
use crate::vcpu::{self, ExitReason, Shared, VcpuThread, Want};
use crate::{Error, cpu, mptable, multiboot};
use dirty_log::DirtyLog;
pub use fence::FenceHandle;

/// Most vCPUs a Ferry VM may have.
pub const MAX_VCPUS: u32 = 64;
const TSS_ADDR: usize = 0xfffb_d000;
const SERIAL_GSI: u32 = 4;

/// What to boot.
#[derive(Debug, Clone)]
pub struct BootSpec<'a> {
    /// Multiboot v1 kernel image.
    pub kernel: &'a [u8],
    /// Name shown in status (guest program name or file path).
    pub kernel_name: String,
    pub cmdline: String,
    pub memory_bytes: u64,
    pub vcpus: u32,
}

/// Lifecycle of a VM as the control API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Exited(ExitReason),
}

/// A KVM virtual machine with its memory, devices and vCPU threads.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
    memory: GuestMemoryMmap,
    config: VmConfig,
    msr_index: Vec<u32>,
    devices: Arc<Devices>,
    shared: Arc<Shared>,
    vcpus: Mutex<Vec<VcpuThread>>,
    /// The throttle's timer thread, once a throttle was set.
    throttle_timer: Mutex<Option<JoinHandle<()>>>,
    dirty: Mutex<DirtyLog>,
    /// Guest RAM under userfaultfd while post-copy fills it in.
    postcopy: Mutex<Option<Arc<Userfault>>>,
    /// The shared file guest RAM lives in, if not anonymous memory.
    memory_file: Option<Arc<std::fs::File>>,
    _serial_irq: EventFd,
}

/// Opens /dev/kvm with an error that says what to do.
pub fn open_kvm() -> Result<Kvm, Error> {
    Kvm::new().map_err(Error::OpenKvm)
}

impl Vm {
    /// Creates the machine: memory (anonymous, or in `file`), slots,
    /// interrupt controllers, devices; no vCPUs yet.
    fn create(
        config: VmConfig,
        sink: SerialSink,
        file: Option<Arc<std::fs::File>>,
    ) -> Result<Vm, Error> {
        if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
            return Err(Error::VcpuCount {
                vcpus: config.vcpus,
                max: MAX_VCPUS,
            });
        }
        let kvm = open_kvm()?;
        let max = kvm.get_max_vcpus() as u32;
        if config.vcpus > max {
            return Err(Error::KvmVcpuLimit {
                vcpus: config.vcpus,
                max,
            });
        }
        vcpu::install_kick_handler().map_err(Error::KickSignal)?;
        let memory = memory::allocate_in(&config.regions, file.as_ref())?;
        let fd = kvm.create_vm().map_err(Error::CreateVm)?;
        let dirty = DirtyLog::new(&fd, memory.num_regions())?;
        fd.set_tss_address(TSS_ADDR).map_err(Error::SetTssAddress)?;
        fd.create_irq_chip().map_err(Error::CreateIrqchip)?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(Error::CreatePit)?;
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::SerialEventFd)?;
        fd.register_irqfd(&serial_irq, SERIAL_GSI)
            .map_err(Error::RegisterIrqfd)?;
        let devices = Arc::new(Devices::new(
            serial_irq.try_clone().map_err(Error::SerialEventFd)?,
            sink,
            None,
        ));
        let msr_index = kvm
            .get_msr_index_list()
            .map_err(Error::GetMsrIndexList)?
            .as_slice()
            .to_vec();
        let vm = Vm {
            kvm,
            fd,
            memory,
            config,
            msr_index,
            devices,
            shared: Arc::new(Shared::new(Want::Pause)),
            vcpus: Mutex::new(Vec::new()),
            throttle_timer: Mutex::new(None),
            dirty: Mutex::new(dirty),
            postcopy: Mutex::new(None),
            memory_file: file,
            _serial_irq: serial_irq,
        };
        vm.set_slots(false)?;
        Ok(vm)
    }

    fn set_slots(&self, log_dirty: bool) -> Result<(), Error> {
        for (slot, r) in self.memory.iter().enumerate() {
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: if log_dirty {
                    KVM_MEM_LOG_DIRTY_PAGES
                } else {
                    0
                },
                guest_phys_addr: r.start_addr().0,
                memory_size: r.len(),
                userspace_addr: r.as_ptr() as u64,
            };
            // SAFETY: the mapping lives as long as the VM, which owns it.
            unsafe { self.fd.set_user_memory_region(region) }
                .map_err(Error::SetUserMemoryRegion)?;
        }
        Ok(())
    }

    /// Boots a Multiboot kernel and starts running it.
    pub fn boot(spec: &BootSpec<'_>, sink: SerialSink) -> Result<Vm, Error> {
        Vm::boot_in(spec, sink, None)
    }

    /// [`Vm::boot`] with guest RAM in `file` (an empty shared file, tmpfs
    /// or memfd: [`memory::allocate_in`]) instead of anonymous memory.
    pub fn boot_in(
        spec: &BootSpec<'_>,
        sink: SerialSink,
        file: Option<Arc<std::fs::File>>,
    ) -> Result<Vm, Error> {
        let regions = memory::layout(spec.memory_bytes);
        let vm = Vm::create(
            VmConfig {
                memory_bytes: spec.memory_bytes,
                vcpus: spec.vcpus,
                regions,
                cmdline: spec.cmdline.clone(),
                kernel: spec.kernel_name.clone(),
                tsc_khz: 0,
            },
            sink,
            file,
        )?;
        let loaded = multiboot::load(&vm.memory, spec.memory_bytes, spec.kernel, &spec.cmdline)?;
        mptable::write(&vm.memory, spec.vcpus)?;
        let mut vm = vm;
        let mut fds = Vec::new();
        for id in 0..spec.vcpus {
            let fd = vm.create_vcpu(id)?;
            if vm.config.tsc_khz == 0 {
                vm.config.tsc_khz = fd.get_tsc_khz().unwrap_or(0);
            }
            let cpuid = cpu::cpuid_for(&vm.kvm, id, spec.vcpus, vm.config.tsc_khz)?;
            cpu::set_cpuid(&fd, &cpuid)?;
            cpu::set_lint(&fd)?;
            if id == 0 {
                cpu::set_boot_registers(&fd, loaded.entry, loaded.mbi)?;
            }
            fds.push(fd);
        }
        vm.start_threads(fds)?;
        vm.resume()?;
        Ok(vm)
    }

    /// Creates an empty machine for `config`, to be filled with memory and
    /// then given its state with [`Vm::restore_state`]. Nothing runs yet.
    pub fn for_restore(config: &VmConfig, sink: SerialSink) -> Result<Vm, Error> {
        Vm::for_restore_in(config, sink, None)
    }

    /// [`Vm::for_restore`] with guest RAM in `file`; a file that already
    /// holds this VM's memory (a post-copy source restarted) keeps it.
    pub fn for_restore_in(
        config: &VmConfig,
        sink: SerialSink,
        file: Option<Arc<std::fs::File>>,
    ) -> Result<Vm, Error> {
        let total: u64 = config.regions.iter().map(|r| r.1).sum();
        if total != config.memory_bytes || config.regions != memory::layout(config.memory_bytes) {
            return Err(Error::LayoutMismatch {
                regions: config.regions.clone(),
                memory_bytes: config.memory_bytes,
            });
        }
        Vm::create(config.clone(), sink, file)
    }

    /// Loads the saved state into this machine; the vCPUs are created paused.
    pub fn restore_state(&mut self, state: &VmState) -> Result<(), Error> {
        self.restore_state_inner(state)?;
        self.config.tsc_khz = state.config.tsc_khz;
        Ok(())
    }

    fn restore_state_inner(&self, state: &VmState) -> Result<(), Error> {
        if state.version != STATE_VERSION {
            return Err(Error::StateVersion {
                found: state.version,
                supported: STATE_VERSION,
            });
        }
        if state.vcpus.len() != self.config.vcpus as usize {
            return Err(Error::VcpuCountMismatch {
                state: state.vcpus.len(),
                config: self.config.vcpus,
            });
        }
        if !self.vcpus.lock().unwrap().is_empty() {
            return Err(Error::AlreadyHasVcpus);
        }
        self.load_machine_state(state)?;
        let mut fds = Vec::new();
        for s in &state.vcpus {
            let fd = self.create_vcpu(s.id)?;
            cpu::restore_state(&fd, s)?;
            fds.push(fd);
        }
        self.start_threads(fds)
    }

    fn create_vcpu(&self, id: u32) -> Result<VcpuFd, Error> {
        self.fd.create_vcpu(id as u64).map_err(Error::CreateVcpu)
    }

    fn start_threads(&self, fds: Vec<VcpuFd>) -> Result<(), Error> {
        let mut threads = self.vcpus.lock().unwrap();
        for (id, fd) in fds.into_iter().enumerate() {
            let id = id as u32;
            let t = vcpu::spawn(
                id,
                Arc::new(Mutex::new(fd)),
                self.shared.clone(),
                self.devices.clone(),
            )
            .map_err(|source| Error::SpawnVcpu { id, source })?;
            threads.push(t);
        }
        Ok(())
    }

    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// Current lifecycle state.
    pub fn run_state(&self) -> RunState {
        let c = self.shared.ctl.lock().unwrap();
        match (&c.exit, c.want) {
            (Some(r), _) => RunState::Exited(r.clone()),
            (None, Want::Run) => RunState::Running,
            _ => RunState::Paused,
        }
    }

    /// Stops every vCPU at an instruction boundary. Idempotent.
    pub fn pause(&self) -> Result<(), Error> {
        let n = self.vcpus.lock().unwrap().len();
        let mut c = self.shared.ctl.lock().unwrap();
        if let Some(r) = &c.exit {
            return Err(Error::NotRunning(r.clone()));
        }
        c.want = Want::Pause;
        // Wakes vCPUs the throttle keeps out of the guest.
        self.shared.cv.notify_all();
        drop(c);
        self.shared.kick_all();
        let mut c = self.shared.ctl.lock().unwrap();
        while c.parked < n && c.exit.is_none() {
            c = self
                .shared
                .cv
                .wait_timeout(c, Duration::from_millis(50))
                .unwrap()
                .0;
            if c.parked < n {
                drop(c);
                self.shared.kick_all();
                c = self.shared.ctl.lock().unwrap();
            }
        }
        match &c.exit {
            Some(r) => Err(Error::NotRunning(r.clone())),
            None => Ok(()),
        }
    }

    /// Lets the vCPUs run again (never while fenced).
    pub fn resume(&self) -> Result<(), Error> {
        let mut c = self.shared.ctl.lock().unwrap();
        if let Some(r) = &c.exit {
            return Err(Error::NotRunning(r.clone()));
        }
        if c.fenced {
            return Err(Error::Fenced);
        }
        c.want = Want::Run;
        self.shared.cv.notify_all();
        Ok(())
    }

    /// Keeps every vCPU out of the guest for `fraction` of the time (0 =
    /// full speed, at most [`MAX_THROTTLE`]), from now until changed; the
    /// guest sees its work slow down by that share.
    pub fn set_throttle(&self, fraction: f64) -> Result<(), Error> {
        if !(0.0..=MAX_THROTTLE).contains(&fraction) {
            return Err(Error::ThrottleRange(fraction));
        }
        if self.shared.throttle.set(fraction) {
            let shared = self.shared.clone();
            let h = std::thread::Builder::new()
                .name("vcpu-throttle".into())
                .spawn(move || throttle::timer_loop(shared))
                .map_err(|e| {
                    self.shared.throttle.set(0.0);
                    Error::SpawnThrottle(e)
                })?;
            *self.throttle_timer.lock().unwrap() = Some(h);
        }
        // Wakes vCPUs out of the guest, so a lower throttle applies at once.
        let _c = self.shared.ctl.lock().unwrap();
        self.shared.cv.notify_all();
        Ok(())
    }

    /// The share of time the vCPUs are kept out of the guest.
    pub fn throttle(&self) -> f64 {
        self.shared.throttle.fraction()
    }

    /// Forgets the content of the `(gpa, len)` ranges (they read as zero
    /// until written): a destination drops the copies its source says are
    /// stale while pre-copy goes on. Only while the VM is paused and not in
    /// post-copy.
    pub fn discard_pages(&self, ranges: &[(u64, u64)]) -> Result<(), Error> {
        if self.run_state() != RunState::Paused || self.postcopy.lock().unwrap().is_some() {
            return Err(Error::DiscardRunning);
        }
        crate::postcopy::discard(&crate::memory::host_regions(&self.memory), ranges)
    }

    /// Post-copy: drops the `(gpa, len)` ranges whose content is still to
    /// come and intercepts the first touch of every page not present, until
    /// [`Userfault::finish`]. The VM must be paused (restored, not resumed).
    /// With `resident_only`, pages of `missing` not present (discarded
    /// before, [`Vm::discard_pages`]) are not dropped again.
    pub fn start_postcopy(
        &self,
        missing: &[(u64, u64)],
        resident_only: bool,
    ) -> Result<Arc<Userfault>, Error> {
        if self.run_state() != RunState::Paused {
            return Err(Error::PostcopyNotPaused);
        }
        let uf = Arc::new(Userfault::start(&self.memory, missing, resident_only)?);
        *self.postcopy.lock().unwrap() = Some(Arc::clone(&uf));
        Ok(uf)
    }

    /// Frees guest memory of a VM that will never run here again: after a
    /// migration, once the destination holds every page. In a file its
    /// pages are punched out (madvise frees nothing of a shared file).
    pub fn release_memory(&self) {
        for r in self.host_regions() {
            // SAFETY: our own mapping; its pages read as zero afterwards,
            // which nobody looks at any more.
            unsafe { libc::madvise(r.host.cast(), r.len as usize, libc::MADV_DONTNEED) };
        }
        if let Some(f) = &self.memory_file {
            let total = self.config.regions.iter().map(|r| r.1).sum();
            if let Err(e) = memory::punch_out(f, 0, total) {
                tracing::warn!("cannot free the guest memory file: {e}");
            }
        }
    }

    /// The shared file guest RAM lives in (`None`: anonymous memory).
    pub fn memory_file(&self) -> Option<&Arc<std::fs::File>> {
        self.memory_file.as_ref()
    }

    /// Sets a bit in `words` for every page of RAM region `region` (in
    /// [`Vm::host_regions`] order) that may hold data; pages left clear
    /// read as zero. Anonymous memory asks the page tables, a memory file
    /// its extents (the page tables do not hold there: pages this process
    /// never touched, or that are in swap, show in none).
    pub fn data_pages(&self, region: usize, words: &mut [u64]) -> Result<(), Error> {
        let r = self
            .host_regions()
            .get(region)
            .copied()
            .ok_or(Error::OutsideMemory { gpa: 0, len: 0 })?;
        match &self.memory_file {
            Some(f) => {
                let offset = self.config.regions[..region].iter().map(|r| r.1).sum();
                vmstate::file_data_pages(f, offset, r.len, words)
            }
            None => vmstate::resident_pages(r.host, r.len as usize, words),
        }
        .map_err(Error::ResidentPages)
    }

    /// Hands the VM over to another host: it never runs here again, but its
    /// memory stays readable until this `Vm` is dropped.
    pub fn retire(&self) {
        self.shared.finish(ExitReason::Migrated);
    }

    /// Ends the VM for good (its state stays readable).
    pub fn stop(&self, reason: ExitReason) {
        self.shared.finish(reason);
    }

    /// Blocks until the VM ends, or `timeout` passes.
    pub fn wait(&self, timeout: Option<Duration>) -> Option<ExitReason> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut c = self.shared.ctl.lock().unwrap();
        loop {
            if let Some(r) = &c.exit {
                return Some(r.clone());
            }
            match deadline {
                None => c = self.shared.cv.wait(c).unwrap(),
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        return None;
                    }
                    c = self.shared.cv.wait_timeout(c, d - now).unwrap().0;
                }
            }
        }
    }

    /// Captures the whole VM state except memory. The VM must be paused.
    pub fn save_state(&self) -> Result<VmState, Error> {
        let threads = self.vcpus.lock().unwrap();
        {
            let c = self.shared.ctl.lock().unwrap();
            if c.want == Want::Run || c.parked < threads.len() {
                return Err(Error::NotPaused);
            }
        }
        let mut vcpus = Vec::with_capacity(threads.len());
        for (id, t) in threads.iter().enumerate() {
            let fd = t.fd.lock().unwrap();
            let cpuid = fd
                .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
                .map_err(Error::GetCpuid)?;
            let cpuid: Vec<kvm_cpuid_entry2> = cpuid.as_slice().to_vec();
            vcpus.push(cpu::save_state(&fd, id as u32, &cpuid, &self.msr_index)?);
        }
        let chip = |id| -> Result<kvm_irqchip, Error> {
            let mut c = kvm_irqchip {
                chip_id: id,
                ..Default::default()
            };
            self.fd.get_irqchip(&mut c).map_err(Error::GetIrqchip)?;
            Ok(c)
        };
        let irqchip = IrqchipState {
            pic_master: chip(KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: chip(KVM_IRQCHIP_IOAPIC)?,
            pit: self.fd.get_pit2().map_err(Error::GetPit)?,
            clock: self.fd.get_clock().map_err(Error::GetClock)?,
        };
        Ok(VmState {
            version: STATE_VERSION,
            config: self.config.clone(),
            vcpus,
            irqchip,
            devices: self.devices.save_state(),
        })
    }

    /// Reads guest memory (for example the guest's status page).
    pub fn read_memory(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.memory
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|source| Error::ReadMemory { gpa, source })
    }

    /// Host mappings of guest RAM, for bulk copies.
    pub fn host_regions(&self) -> Vec<memory::HostRegion> {
        memory::host_regions(&self.memory)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // The timer kicks vCPU threads: it ends before they are joined.
        self.shared.throttle.shut_down();
        if let Some(h) = self.throttle_timer.lock().unwrap().take() {
            let _ = h.join();
        }
        self.shared.finish(ExitReason::Stopped);
        // A vCPU waiting for a page that will not come now gets a zero page
        // and sees the stop before it enters the guest again.
        if let Some(uf) = self.postcopy.lock().unwrap().take() {
            let _ = uf.finish();
        }
        let mut threads = self.vcpus.lock().unwrap();
        for t in threads.iter_mut() {
            if let Some(h) = t.handle.take() {
                let _ = h.join();
            }
        }
    }
}
