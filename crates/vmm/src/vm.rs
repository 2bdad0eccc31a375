//! The virtual machine: KVM objects, guest memory, devices and vCPU threads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MEM_LOG_DIRTY_PAGES,
    KVM_PIT_SPEAKER_DUMMY, kvm_clear_dirty_log, kvm_cpuid_entry2, kvm_enable_cap, kvm_irqchip,
    kvm_pit_config, kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;
use vmstate::{IrqchipState, STATE_VERSION, VmConfig, VmState};

use crate::devices::{Devices, SerialSink};
use crate::memory::{self, PAGE_SIZE};
use crate::vcpu::{self, ExitReason, Shared, VcpuThread, Want};
use crate::{Error, cpu, mptable, multiboot};

const KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: u64 = 168;
const MANUAL_PROTECT_ENABLE: u64 = 1;
const TSS_ADDR: usize = 0xfffb_d000;
const SERIAL_GSI: u32 = 4;

vmm_sys_util::ioctl_iowr_nr!(
    KVM_CLEAR_DIRTY_LOG,
    kvm_bindings::KVMIO,
    0xc0,
    kvm_clear_dirty_log
);

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

struct DirtyLog {
    enabled: bool,
    manual: bool,
    /// Pages the VMM itself wrote, per region, merged into every harvest.
    vmm_writes: Vec<Vec<u64>>,
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
    dirty: Mutex<DirtyLog>,
    _serial_irq: EventFd,
}

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> Error {
    move |e| Error::Kvm(what, e)
}

/// Opens /dev/kvm with an error that says what to do.
pub fn open_kvm() -> Result<Kvm, Error> {
    Kvm::new().map_err(|e| {
        let hint = match e.errno() {
            libc::ENOENT => "no /dev/kvm on this host (is KVM enabled? load kvm_intel or kvm_amd)",
            libc::EACCES | libc::EPERM => {
                "permission denied on /dev/kvm (run as root or join the kvm group)"
            }
            _ => "cannot open /dev/kvm",
        };
        Error::NoKvm(format!("{hint}: {e}"))
    })
}

impl Vm {
    /// Creates the machine: memory, slots, interrupt controllers, devices; no vCPUs yet.
    fn create(config: VmConfig, sink: SerialSink) -> Result<Vm, Error> {
        if config.vcpus == 0 || config.vcpus > 64 {
            return Err(Error::Config(format!(
                "{} vCPUs requested; Ferry supports 1 to 64",
                config.vcpus
            )));
        }
        let kvm = open_kvm()?;
        let max = kvm.get_max_vcpus() as u32;
        if config.vcpus > max {
            return Err(Error::Config(format!(
                "{} vCPUs requested but KVM allows {max}",
                config.vcpus
            )));
        }
        vcpu::install_kick_handler()?;
        let memory = memory::allocate(&config.regions)?;
        let fd = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        let manual_caps = fd.check_extension_raw(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) as u64;
        let manual = manual_caps & MANUAL_PROTECT_ENABLE != 0;
        if manual {
            let mut cap = kvm_enable_cap {
                cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 as u32,
                ..Default::default()
            };
            // Without INITIALLY_SET, enabling logging write-protects every page
            // at once, so the first harvest reports only real writes.
            cap.args[0] = MANUAL_PROTECT_ENABLE;
            fd.enable_cap(&cap)
                .map_err(kvm_err("KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2)"))?;
        }
        fd.set_tss_address(TSS_ADDR)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        fd.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::Io)?;
        fd.register_irqfd(&serial_irq, SERIAL_GSI)
            .map_err(kvm_err("KVM_IRQFD"))?;
        let devices = Arc::new(Devices::new(
            serial_irq.try_clone().map_err(Error::Io)?,
            sink,
            None,
        ));
        let msr_index = kvm
            .get_msr_index_list()
            .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?
            .as_slice()
            .to_vec();
        let regions = memory.num_regions();
        let vm = Vm {
            kvm,
            fd,
            memory,
            config,
            msr_index,
            devices,
            shared: Arc::new(Shared::new(Want::Pause)),
            vcpus: Mutex::new(Vec::new()),
            dirty: Mutex::new(DirtyLog {
                enabled: false,
                manual,
                vmm_writes: vec![Vec::new(); regions],
            }),
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
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }
        Ok(())
    }

    /// Boots a Multiboot kernel and starts running it.
    pub fn boot(spec: &BootSpec<'_>, sink: SerialSink) -> Result<Vm, Error> {
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
    /// then [`Vm::restore`]d. Nothing runs yet.
    pub fn for_restore(config: &VmConfig, sink: SerialSink) -> Result<Vm, Error> {
        let total: u64 = config.regions.iter().map(|r| r.1).sum();
        if total != config.memory_bytes || config.regions != memory::layout(config.memory_bytes) {
            return Err(Error::Restore(format!(
                "memory layout {:?} does not match {} bytes of RAM",
                config.regions, config.memory_bytes
            )));
        }
        Vm::create(config.clone(), sink)
    }

    /// Loads the saved state into this machine; the vCPUs are created paused.
    pub fn restore(&mut self, state: &VmState) -> Result<(), Error> {
        if state.version != STATE_VERSION {
            return Err(Error::Restore(format!(
                "state version {} is not supported (this Ferry reads {STATE_VERSION})",
                state.version
            )));
        }
        if state.vcpus.len() != self.config.vcpus as usize {
            return Err(Error::Restore(format!(
                "state has {} vCPUs but the VM was configured with {}",
                state.vcpus.len(),
                self.config.vcpus
            )));
        }
        if !self.vcpus.lock().unwrap().is_empty() {
            return Err(Error::Restore("the VM already has vCPUs".into()));
        }
        let irq = &state.irqchip;
        for chip in [&irq.pic_master, &irq.pic_slave, &irq.ioapic] {
            self.fd
                .set_irqchip(chip)
                .map_err(kvm_err("KVM_SET_IRQCHIP"))?;
        }
        self.fd
            .set_pit2(&irq.pit)
            .map_err(kvm_err("KVM_SET_PIT2"))?;
        let mut clock = irq.clock;
        clock.flags = 0;
        self.fd
            .set_clock(&clock)
            .map_err(kvm_err("KVM_SET_CLOCK"))?;
        self.devices.load(&state.devices);
        let mut fds = Vec::new();
        for s in &state.vcpus {
            let fd = self.create_vcpu(s.id)?;
            cpu::restore(&fd, s)?;
            fds.push(fd);
        }
        self.config.tsc_khz = state.config.tsc_khz;
        self.start_threads(fds)
    }

    fn create_vcpu(&self, id: u32) -> Result<VcpuFd, Error> {
        self.fd
            .create_vcpu(id as u64)
            .map_err(kvm_err("KVM_CREATE_VCPU"))
    }

    fn start_threads(&self, fds: Vec<VcpuFd>) -> Result<(), Error> {
        let mut threads = self.vcpus.lock().unwrap();
        for (id, fd) in fds.into_iter().enumerate() {
            let t = vcpu::spawn(
                id as u32,
                Arc::new(Mutex::new(fd)),
                self.shared.clone(),
                self.devices.clone(),
            )
            .map_err(Error::Io)?;
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

    /// Lets the vCPUs run again.
    pub fn resume(&self) -> Result<(), Error> {
        let mut c = self.shared.ctl.lock().unwrap();
        if let Some(r) = &c.exit {
            return Err(Error::NotRunning(r.clone()));
        }
        c.want = Want::Run;
        self.shared.cv.notify_all();
        Ok(())
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
                return Err(Error::State(
                    "the VM must be paused to save its state".into(),
                ));
            }
        }
        let mut vcpus = Vec::with_capacity(threads.len());
        for (id, t) in threads.iter().enumerate() {
            let fd = t.fd.lock().unwrap();
            let cpuid = fd
                .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
                .map_err(kvm_err("KVM_GET_CPUID2"))?;
            let cpuid: Vec<kvm_cpuid_entry2> = cpuid.as_slice().to_vec();
            vcpus.push(cpu::save(&fd, id as u32, &cpuid, &self.msr_index)?);
        }
        let chip = |id| -> Result<kvm_irqchip, Error> {
            let mut c = kvm_irqchip {
                chip_id: id,
                ..Default::default()
            };
            self.fd
                .get_irqchip(&mut c)
                .map_err(kvm_err("KVM_GET_IRQCHIP"))?;
            Ok(c)
        };
        let irqchip = IrqchipState {
            pic_master: chip(KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: chip(KVM_IRQCHIP_IOAPIC)?,
            pit: self.fd.get_pit2().map_err(kvm_err("KVM_GET_PIT2"))?,
            clock: self.fd.get_clock().map_err(kvm_err("KVM_GET_CLOCK"))?,
        };
        Ok(VmState {
            version: STATE_VERSION,
            config: self.config.clone(),
            vcpus,
            irqchip,
            devices: self.devices.save(),
        })
    }

    /// Reads guest memory (for example the guest's status page).
    pub fn read_memory(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.memory
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|e| Error::State(format!("cannot read guest memory at {gpa:#x}: {e}")))
    }

    /// Writes guest memory on behalf of the VMM; the pages count as dirty.
    pub fn write_memory(&self, gpa: u64, data: &[u8]) -> Result<(), Error> {
        self.memory
            .write_slice(data, GuestAddress(gpa))
            .map_err(|e| Error::State(format!("cannot write guest memory at {gpa:#x}: {e}")))?;
        let mut d = self.dirty.lock().unwrap();
        if d.enabled && !data.is_empty() {
            let first = gpa / PAGE_SIZE;
            let last = (gpa + data.len() as u64 - 1) / PAGE_SIZE;
            for page in first..=last {
                if let Some((slot, idx)) = self.page_slot(page * PAGE_SIZE) {
                    let words = &mut d.vmm_writes[slot];
                    words[idx / 64] |= 1 << (idx % 64);
                }
            }
        }
        Ok(())
    }

    fn page_slot(&self, gpa: u64) -> Option<(usize, usize)> {
        self.config
            .regions
            .iter()
            .enumerate()
            .find(|(_, r)| gpa >= r.0 && gpa < r.0 + r.1)
            .map(|(i, r)| (i, ((gpa - r.0) / PAGE_SIZE) as usize))
    }

    /// Starts dirty-page tracking on every memory slot.
    pub fn start_dirty_log(&self) -> Result<(), Error> {
        let mut d = self.dirty.lock().unwrap();
        if d.enabled {
            return Ok(());
        }
        self.set_slots(true)?;
        for (i, r) in self.config.regions.iter().enumerate() {
            d.vmm_writes[i] = vec![0; (r.1 / PAGE_SIZE).div_ceil(64) as usize];
        }
        d.enabled = true;
        Ok(())
    }

    /// Stops dirty-page tracking.
    pub fn stop_dirty_log(&self) -> Result<(), Error> {
        let mut d = self.dirty.lock().unwrap();
        if d.enabled {
            self.set_slots(false)?;
            d.enabled = false;
        }
        Ok(())
    }

    /// ORs into `out[region]` every page written since the previous harvest
    /// (by the guest or the VMM) and re-arms tracking for those pages.
    /// Bit `i` of region `r` is the page at `regions[r].0 + i * 4096`.
    pub fn harvest_dirty(&self, out: &mut [Vec<u64>]) -> Result<(), Error> {
        let mut d = self.dirty.lock().unwrap();
        if !d.enabled {
            return Err(Error::State("dirty logging is not enabled".into()));
        }
        for (slot, r) in self.config.regions.iter().enumerate() {
            let pages = r.1 / PAGE_SIZE;
            let mut bitmap = self
                .fd
                .get_dirty_log(slot as u32, r.1 as usize)
                .map_err(kvm_err("KVM_GET_DIRTY_LOG"))?;
            if d.manual && bitmap.iter().any(|&w| w != 0) {
                let mut clear = kvm_clear_dirty_log {
                    slot: slot as u32,
                    num_pages: pages as u32,
                    first_page: 0,
                    ..Default::default()
                };
                clear.__bindgen_anon_1.dirty_bitmap = bitmap.as_mut_ptr().cast();
                // SAFETY: the bitmap covers `num_pages` bits of this slot.
                let ret = unsafe {
                    vmm_sys_util::ioctl::ioctl_with_ref(&self.fd, KVM_CLEAR_DIRTY_LOG(), &clear)
                };
                if ret < 0 {
                    return Err(Error::Kvm("KVM_CLEAR_DIRTY_LOG", kvm_ioctls::Error::last()));
                }
            }
            let dst = &mut out[slot];
            dst.resize(bitmap.len(), 0);
            let own = &mut d.vmm_writes[slot];
            for (i, w) in bitmap.iter().enumerate() {
                dst[i] |= w | own.get(i).copied().unwrap_or(0);
            }
            own.iter_mut().for_each(|w| *w = 0);
        }
        Ok(())
    }

    /// Host mappings of guest RAM, for bulk copies.
    pub fn host_regions(&self) -> Vec<memory::HostRegion> {
        memory::host_regions(&self.memory)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.shared.finish(ExitReason::Stopped);
        let mut threads = self.vcpus.lock().unwrap();
        for t in threads.iter_mut() {
            if let Some(h) = t.handle.take() {
                let _ = h.join();
            }
        }
    }
}
