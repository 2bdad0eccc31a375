//! What can go wrong in the VMM. Every variant says what failed and carries
//! the error it failed with; KVM ioctls have one variant each.

use std::io;

use vm_memory::GuestMemoryError;

use crate::multiboot::KernelError;
use crate::vcpu::ExitReason;

/// What went wrong, in terms an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The host.
    #[error("{hint}: {0}", hint = open_kvm_hint(.0))]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("cannot install the vCPU kick signal handler: {0}")]
    KickSignal(#[source] vmm_sys_util::errno::Error),
    #[error("cannot create the serial interrupt eventfd: {0}")]
    SerialEventFd(#[source] io::Error),
    #[error("cannot start the thread of vCPU {id}: {source}")]
    SpawnVcpu {
        id: u32,
        #[source]
        source: io::Error,
    },

    // The machine asked for.
    #[error("bad configuration: {vcpus} vCPUs requested; Ferry supports 1 to {max}")]
    VcpuCount { vcpus: u32, max: u32 },
    #[error("bad configuration: {vcpus} vCPUs requested but KVM allows {max}")]
    KvmVcpuLimit { vcpus: u32, max: u32 },
    #[error("bad configuration: {vcpus} vCPUs do not fit in the MP table")]
    MpTableFull { vcpus: u32 },
    #[error("bad configuration: {0} CPUID entries are too many")]
    TooManyCpuidEntries(usize),
    #[error("bad configuration: {0} MSRs are too many")]
    TooManyMsrs(usize),
    #[error("bad kernel: {0}")]
    Kernel(#[from] KernelError),
    #[error("cannot write the MP table: {0}")]
    WriteMpTable(#[source] GuestMemoryError),

    // Guest memory.
    #[error("guest memory: {bytes} bytes is not a positive multiple of 4 KiB")]
    MemoryUnaligned { bytes: u64 },
    #[error(
        "guest memory: the guest wants {} but the host has only {} available",
        units::format_bytes(*wanted),
        units::format_bytes(*available)
    )]
    MemoryUnavailable { wanted: u64, available: u64 },
    #[error("guest memory: cannot map {}: {source}", units::format_bytes(*bytes))]
    MapMemory {
        bytes: u64,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("guest memory file: {0}")]
    MemoryFile(#[source] io::Error),
    #[error(
        "the guest memory file holds {}, the VM has {}: it belongs to another VM",
        units::format_bytes(*file),
        units::format_bytes(*total)
    )]
    MemoryFileSize { file: u64, total: u64 },
    #[error("cannot read guest memory at {gpa:#x}: {source}")]
    ReadMemory {
        gpa: u64,
        #[source]
        source: GuestMemoryError,
    },
    #[error("cannot write guest memory at {gpa:#x}: {source}")]
    WriteMemory {
        gpa: u64,
        #[source]
        source: GuestMemoryError,
    },
    #[error("cannot tell which guest pages hold data: {0}")]
    ResidentPages(#[source] io::Error),
    #[error("guest memory {gpa:#x}+{len:#x} is not inside one RAM region")]
    OutsideMemory { gpa: u64, len: u64 },

    // Post-copy.
    #[error("userfaultfd {op} failed: {source}")]
    Userfault {
        op: &'static str,
        #[source]
        source: userfaultfd::Error,
    },
    #[error("cannot drop guest pages (madvise MADV_DONTNEED): {0}")]
    DropPages(#[source] io::Error),
    #[error("waiting for guest page faults failed: {0}")]
    Poll(#[source] io::Error),
    #[error("post-copy needs the VM paused")]
    PostcopyNotPaused,
    #[error("pages can be discarded only while the VM is paused and not in post-copy")]
    DiscardRunning,

    // Lifecycle and state.
    #[error("the VM is not running: {0:?}")]
    NotRunning(ExitReason),
    #[error(
        "the VM is fenced: its post-copy lease lapsed, and only a renewal from the source lets it run"
    )]
    Fenced,
    #[error("the VM must be paused to save its state")]
    NotPaused,
    #[error("only a VM retired by a migration can be taken back")]
    NotRetired,
    #[error("vCPU throttle {0} is out of range: it must be from 0 to 0.99 (99 %)")]
    ThrottleRange(f64),
    #[error("cannot start the vCPU throttle thread: {0}")]
    SpawnThrottle(#[source] io::Error),
    #[error("dirty logging is not enabled")]
    DirtyLogDisabled,
    #[error("cannot restore: memory layout {regions:?} does not match {memory_bytes} bytes of RAM")]
    LayoutMismatch {
        regions: Vec<(u64, u64)>,
        memory_bytes: u64,
    },
    #[error(
        "cannot restore: state version {found} is not supported (this Ferry reads {supported})"
    )]
    StateVersion { found: u32, supported: u32 },
    #[error("cannot restore: state has {state} vCPUs but the VM was configured with {config}")]
    VcpuCountMismatch { state: usize, config: u32 },
    #[error("cannot restore: the VM already has vCPUs")]
    AlreadyHasVcpus,
    #[error("cannot restore: KVM refused MSR {index:#x} of vCPU {vcpu}")]
    MsrRefused { index: u32, vcpu: u32 },
    #[error("cannot write snapshot: {0}")]
    WriteSnapshot(#[source] vmstate::EncodeError),
    #[error("cannot restore: {0}")]
    ReadSnapshot(#[source] vmstate::DecodeError),
    #[error("cannot restore: the snapshot has no configuration")]
    SnapshotWithoutConfig,

    // KVM ioctls on the VM.
    #[error("KVM_CREATE_VM failed: {0}")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2) failed: {0}")]
    EnableDirtyLogProtect(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_TSS_ADDR failed: {0}")]
    SetTssAddress(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_IRQCHIP failed: {0}")]
    CreateIrqchip(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_PIT2 failed: {0}")]
    CreatePit(#[source] kvm_ioctls::Error),
    #[error("KVM_IRQFD failed: {0}")]
    RegisterIrqfd(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_MSR_INDEX_LIST failed: {0}")]
    GetMsrIndexList(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    GetSupportedCpuid(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_USER_MEMORY_REGION failed: {0}")]
    SetUserMemoryRegion(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_VCPU failed: {0}")]
    CreateVcpu(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_IRQCHIP failed: {0}")]
    GetIrqchip(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_IRQCHIP failed: {0}")]
    SetIrqchip(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_PIT2 failed: {0}")]
    GetPit(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_PIT2 failed: {0}")]
    SetPit(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_CLOCK failed: {0}")]
    GetClock(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_CLOCK failed: {0}")]
    SetClock(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_DIRTY_LOG failed: {0}")]
    GetDirtyLog(#[source] kvm_ioctls::Error),
    #[error("KVM_CLEAR_DIRTY_LOG failed: {0}")]
    ClearDirtyLog(#[source] kvm_ioctls::Error),

    // KVM ioctls on a vCPU.
    #[error("KVM_GET_CPUID2 failed: {0}")]
    GetCpuid(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_CPUID2 failed: {0}")]
    SetCpuid(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_REGS failed: {0}")]
    GetRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_REGS failed: {0}")]
    SetRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_SREGS failed: {0}")]
    GetSregs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_SREGS failed: {0}")]
    SetSregs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_FPU failed: {0}")]
    SetFpu(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_XSAVE failed: {0}")]
    GetXsave(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_XSAVE failed: {0}")]
    SetXsave(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_XCRS failed: {0}")]
    GetXcrs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_XCRS failed: {0}")]
    SetXcrs(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_DEBUGREGS failed: {0}")]
    GetDebugRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_DEBUGREGS failed: {0}")]
    SetDebugRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_LAPIC failed: {0}")]
    GetLapic(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_LAPIC failed: {0}")]
    SetLapic(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_MSRS failed: {0}")]
    GetMsrs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_MSRS failed: {0}")]
    SetMsrs(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_MP_STATE failed: {0}")]
    GetMpState(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_MP_STATE failed: {0}")]
    SetMpState(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_VCPU_EVENTS failed: {0}")]
    GetVcpuEvents(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_VCPU_EVENTS failed: {0}")]
    SetVcpuEvents(#[source] kvm_ioctls::Error),
}

/// What to do about /dev/kvm not opening.
fn open_kvm_hint(e: &kvm_ioctls::Error) -> &'static str {
    match e.errno() {
        libc::ENOENT => "no /dev/kvm on this host (is KVM enabled? load kvm_intel or kvm_amd)",
        libc::EACCES | libc::EPERM => {
            "permission denied on /dev/kvm (run as root or join the kvm group)"
        }
        _ => "cannot open /dev/kvm",
    }
}
