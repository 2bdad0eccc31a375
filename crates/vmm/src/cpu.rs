//! vCPU configuration and architectural state: CPUID, boot registers,
//! and capture/restore in the order KVM requires.

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_cpuid_entry2, kvm_msr_entry, kvm_segment,
};
use kvm_ioctls::{Kvm, VcpuFd};
use vmstate::VcpuState;

use crate::Error;

/// Hypervisor CPUID leaf that carries the TSC frequency (kHz) in EAX,
/// as VMware and QEMU's `vmware-cpuid-freq` define it.
pub const TIMING_LEAF: u32 = 0x4000_0010;
const KVM_SIGNATURE_LEAF: u32 = 0x4000_0000;

/// CPUID for vCPU `id`: what KVM supports, with the APIC ID set and the
/// TSC frequency published.
pub fn cpuid_for(
    kvm: &Kvm,
    id: u32,
    vcpus: u32,
    tsc_khz: u32,
) -> Result<Vec<kvm_cpuid_entry2>, Error> {
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::GetSupportedCpuid)?;
    let mut entries: Vec<kvm_cpuid_entry2> = supported.as_slice().to_vec();
    let mut has_timing = false;
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x00ff_ffff) | (id << 24);
                e.ebx = (e.ebx & 0xff00_ffff) | (vcpus.min(255) << 16);
                e.edx |= 1 << 28; // HTT: the count in EBX[23:16] is valid
            }
            0xb => {
                e.edx = id;
            }
            KVM_SIGNATURE_LEAF => e.eax = e.eax.max(TIMING_LEAF),
            TIMING_LEAF => has_timing = true,
            _ => {}
        }
    }
    if !has_timing {
        entries.push(kvm_cpuid_entry2 {
            function: TIMING_LEAF,
            eax: tsc_khz,
            ebx: 1_000_000, // LAPIC timer: KVM counts in nanoseconds
            ..Default::default()
        });
    }
    Ok(entries)
}

pub fn set_cpuid(vcpu: &VcpuFd, entries: &[kvm_cpuid_entry2]) -> Result<(), Error> {
    let cpuid =
        CpuId::from_entries(entries).map_err(|_| Error::TooManyCpuidEntries(entries.len()))?;
    vcpu.set_cpuid2(&cpuid).map_err(Error::SetCpuid)
}

/// Registers for a Multiboot entry: 32-bit protected mode, flat segments, paging off.
pub fn set_boot_registers(vcpu: &VcpuFd, entry: u32, mbi: u32) -> Result<(), Error> {
    let mut sregs = vcpu.get_sregs().map_err(Error::GetSregs)?;
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x10,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_segment {
        selector: 0x18,
        type_: 0x3,
        ..code
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.cr0 = 0x11; // PE | ET
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).map_err(Error::SetSregs)?;
    let regs = kvm_bindings::kvm_regs {
        rip: entry as u64,
        rax: crate::multiboot::BOOT_MAGIC as u64,
        rbx: mbi as u64,
        rflags: 0x2,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(Error::SetRegs)?;
    let fpu = kvm_bindings::kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(Error::SetFpu)
}

/// Wires LINT0 to ExtINT and LINT1 to NMI, as a PC BIOS leaves them.
pub fn set_lint(vcpu: &VcpuFd) -> Result<(), Error> {
    const LVT_LINT0: usize = 0x350;
    const LVT_LINT1: usize = 0x360;
    let mut lapic = vcpu.get_lapic().map_err(Error::GetLapic)?;
    let mut put = |off: usize, mode: u32| {
        let bytes: &mut [u8] =
            // SAFETY: c_char and u8 have the same layout.
            unsafe { std::slice::from_raw_parts_mut(lapic.regs.as_mut_ptr().cast(), lapic.regs.len()) };
        let mut v = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap());
        v = (v & !0x700) | (mode << 8);
        bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    };
    put(LVT_LINT0, 0x7);
    put(LVT_LINT1, 0x4);
    vcpu.set_lapic(&lapic).map_err(Error::SetLapic)
}

/// Reads every MSR in `indices` that KVM lets us read.
fn get_msrs(vcpu: &VcpuFd, indices: &[u32]) -> Result<Vec<(u32, u64)>, Error> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let entries: Vec<kvm_msr_entry> = rest
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs =
            Msrs::from_entries(&entries).map_err(|_| Error::TooManyMsrs(entries.len()))?;
        let n = vcpu.get_msrs(&mut msrs).map_err(Error::GetMsrs)?;
        out.extend(msrs.as_slice()[..n].iter().map(|e| (e.index, e.data)));
        // KVM stops at the first MSR it cannot read: skip that one.
        rest = &rest[(n + 1).min(rest.len())..];
    }
    Ok(out)
}

/// Captures vCPU `id`'s state. The vCPU must be paused with its I/O completed.
pub fn save_state(
    vcpu: &VcpuFd,
    id: u32,
    cpuid: &[kvm_cpuid_entry2],
    msr_index: &[u32],
) -> Result<VcpuState, Error> {
    let mp_state = vcpu.get_mp_state().map_err(Error::GetMpState)?;
    let regs = vcpu.get_regs().map_err(Error::GetRegs)?;
    let sregs = vcpu.get_sregs().map_err(Error::GetSregs)?;
    let xsave = vcpu.get_xsave().map_err(Error::GetXsave)?;
    let xcrs = vcpu.get_xcrs().map_err(Error::GetXcrs)?;
    let debugregs = vcpu.get_debug_regs().map_err(Error::GetDebugRegs)?;
    let lapic = vcpu.get_lapic().map_err(Error::GetLapic)?;
    let msrs = get_msrs(vcpu, msr_index)?;
    let events = vcpu.get_vcpu_events().map_err(Error::GetVcpuEvents)?;
    Ok(VcpuState {
        id,
        cpuid: cpuid.to_vec(),
        mp_state,
        regs,
        sregs,
        xsave,
        xcrs,
        msrs,
        lapic,
        events,
        debugregs,
    })
}

/// Loads `s` into a freshly created vCPU, in the order KVM requires.
pub fn restore_state(vcpu: &VcpuFd, s: &VcpuState) -> Result<(), Error> {
    set_cpuid(vcpu, &s.cpuid)?;
    vcpu.set_mp_state(s.mp_state).map_err(Error::SetMpState)?;
    vcpu.set_regs(&s.regs).map_err(Error::SetRegs)?;
    vcpu.set_sregs(&s.sregs).map_err(Error::SetSregs)?;
    // SAFETY: the buffer is a full kvm_xsave obtained from KVM_GET_XSAVE.
    unsafe { vcpu.set_xsave(&s.xsave) }.map_err(Error::SetXsave)?;
    vcpu.set_xcrs(&s.xcrs).map_err(Error::SetXcrs)?;
    vcpu.set_debug_regs(&s.debugregs)
        .map_err(Error::SetDebugRegs)?;
    vcpu.set_lapic(&s.lapic).map_err(Error::SetLapic)?;
    let entries: Vec<kvm_msr_entry> = s
        .msrs
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|_| Error::TooManyMsrs(entries.len()))?;
    let n = vcpu.set_msrs(&msrs).map_err(Error::SetMsrs)?;
    if n != entries.len() {
        return Err(Error::MsrRefused {
            index: entries[n].index,
            vcpu: s.id,
        });
    }
    vcpu.set_vcpu_events(&s.events)
        .map_err(Error::SetVcpuEvents)
}
