//! Plain data describing everything a guest can observe, apart from memory
//! contents. Every struct here is versioned through [`STATE_VERSION`]; a
//! change of layout bumps it, and readers refuse versions they do not know.

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Version of the state structs below. Bumped on any layout change.
pub const STATE_VERSION: u32 = 1;

/// How the VM was configured; the destination rebuilds the same machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    pub vcpus: u32,
    /// Guest-physical RAM regions as (start, length), in order.
    pub regions: Vec<(u64, u64)>,
    /// Kernel command line the guest was booted with (informational).
    pub cmdline: String,
    /// Guest program name or kernel path (informational).
    pub kernel: String,
    /// TSC frequency of the source, kHz.
    pub tsc_khz: u32,
}

/// Architectural state of one vCPU, in the order KVM wants it restored.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    pub id: u32,
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    /// Every MSR from KVM_GET_MSR_INDEX_LIST that KVM let us read: (index, value).
    pub msrs: Vec<(u32, u64)>,
    pub lapic: kvm_lapic_state,
    pub events: kvm_vcpu_events,
    pub debugregs: kvm_debugregs,
}

/// In-kernel interrupt controllers and timers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IrqchipState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

/// 16550 UART registers (vm-superio's `SerialState`, mirrored as plain data).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialState {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
    /// The unfinished output line (bytes after the last newline, at most
    /// 4 KiB): already written to the host here; a VMM restoring the state
    /// replays it, so the line arrives whole on its side. (Older VMMs held
    /// these bytes back instead; the replay delivers them too.)
    pub pending_line: Vec<u8>,
}

/// Emulated devices that live in the VMM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    pub serial: SerialState,
}

/// Everything but memory contents.
#[derive(Debug, Serialize, Deserialize)]
pub struct VmState {
    pub version: u32,
    pub config: VmConfig,
    pub vcpus: Vec<VcpuState>,
    pub irqchip: IrqchipState,
    pub devices: DeviceState,
}

/// Most vCPUs a config may have (the MP table's APIC ID space).
pub const MAX_VCPUS: u32 = 255;

impl VmConfig {
    /// Checks that the config describes a machine: 1 to [`MAX_VCPUS`] vCPUs,
    /// at least one region, regions page aligned, non-empty, sorted and not
    /// overlapping, and totalling `memory_bytes`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 {
            return Err(ConfigError::NoVcpus);
        }
        if self.vcpus > MAX_VCPUS {
            return Err(ConfigError::TooManyVcpus {
                vcpus: self.vcpus,
                max: MAX_VCPUS,
            });
        }
        if self.regions.is_empty() {
            return Err(ConfigError::NoRegions);
        }
        let page = crate::PAGE_SIZE as u64;
        let mut total = 0u64;
        let mut prev_end = 0u64;
        for (index, &(start, len)) in self.regions.iter().enumerate() {
            let end = start.checked_add(len);
            if len == 0 || start % page != 0 || len % page != 0 || end.is_none() {
                return Err(ConfigError::BadRegion { index, start, len });
            }
            if index > 0 && start < prev_end {
                return Err(ConfigError::RegionOrder { index, start, len });
            }
            prev_end = end.unwrap_or(u64::MAX);
            total = total.saturating_add(len);
        }
        if total != self.memory_bytes {
            return Err(ConfigError::SizeMismatch {
                regions: total,
                memory_bytes: self.memory_bytes,
            });
        }
        Ok(())
    }

    /// Whether `[gpa, gpa + len)` lies inside a single RAM region.
    pub fn contains_range(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        self.regions
            .iter()
            .any(|&(start, rlen)| gpa >= start && end <= start.saturating_add(rlen))
    }

    /// Splits `[gpa, gpa + len)` at region boundaries into pieces that each
    /// lie inside one region; `None` if any byte is outside guest memory.
    pub(crate) fn split_range(&self, gpa: u64, len: u64) -> Option<Vec<(u64, u64)>> {
        let end = gpa.checked_add(len)?;
        let mut out = Vec::new();
        let mut at = gpa;
        while at < end {
            let &(start, rlen) = self
                .regions
                .iter()
                .find(|&&(start, rlen)| at >= start && at < start.saturating_add(rlen))?;
            let piece_end = end.min(start.saturating_add(rlen));
            out.push((at, piece_end - at));
            at = piece_end;
        }
        Some(out)
    }
}
