//! Shared fixtures: a VM state filled with non-trivial kvm-bindings values,
//! guest memory images, and a sink that rebuilds memory.
#![allow(dead_code)]

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use vmstate::{
    DeviceState, IrqchipState, STATE_VERSION, SerialState, SinkError, SnapshotSink, VcpuState,
    VmConfig, VmState,
};

pub const PAGE: usize = 4096;

/// Two regions with a gap, like RAM split around an MMIO hole.
pub fn config(low: u64, high: u64) -> VmConfig {
    VmConfig {
        memory_bytes: low + high,
        vcpus: 2,
        regions: vec![(0, low), (1 << 32, high)],
        cmdline: "rate=1000 wss=64M pattern=hot:0.1:0.9".into(),
        kernel: "dirtier".into(),
        tsc_khz: 2_300_000,
    }
}

pub fn vcpu(id: u32) -> VcpuState {
    let seed = u64::from(id) * 0x9e37_79b9 + 1;
    let cpuid = (0..24u32)
        .map(|i| kvm_cpuid_entry2 {
            function: i,
            index: i % 3,
            flags: 1,
            eax: i * 11 + id,
            ebx: 0x756e_6547,
            ecx: 0x6c65_746e,
            edx: 0x4965_6e69 ^ i,
            ..Default::default()
        })
        .collect();
    let regs = kvm_regs {
        rax: seed,
        rbx: seed * 3,
        rcx: 0xdead_beef,
        rsp: 0x7fff_f000,
        rip: 0x40_1000 + u64::from(id) * 0x10,
        rflags: 0x202,
        r15: u64::MAX - seed,
        ..Default::default()
    };
    let mut sregs = kvm_sregs {
        cr0: 0x8005_0033,
        cr3: 0x1000,
        cr4: 0x20,
        efer: 0xd01,
        apic_base: 0xfee0_0900,
        ..Default::default()
    };
    sregs.cs.selector = 0x2b;
    sregs.cs.l = 1;
    sregs.cs.present = 1;
    sregs.cs.dpl = 3;
    sregs.gdt.base = 0x5000;
    sregs.gdt.limit = 0x37;
    sregs.interrupt_bitmap[1] = 1 << 17;
    let mut xsave = kvm_xsave::default();
    for (i, w) in xsave.region.iter_mut().enumerate() {
        *w = (i as u32).wrapping_mul(2_654_435_761) ^ id;
    }
    let mut xcrs = kvm_xcrs {
        nr_xcrs: 1,
        ..Default::default()
    };
    xcrs.xcrs[0].value = 0x7;
    let msrs = vec![
        (0x10, 0x1234_5678_9abc + u64::from(id)),
        (0x1b, 0xfee0_0900),
        (0xc000_0080, 0xd01),
        (0xc000_0100, 0x7f00_0000_0000),
    ];
    let mut lapic = kvm_lapic_state::default();
    for (i, b) in lapic.regs.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13).wrapping_add(id as u8) as _;
    }
    let mut events = kvm_vcpu_events::default();
    events.exception.injected = 1;
    events.exception.nr = 14;
    events.exception.error_code = 6;
    events.nmi.pending = 1;
    events.flags = 0x4;
    let debugregs = kvm_debugregs {
        db: [1, 2, 3, 4 + u64::from(id)],
        dr6: 0xffff_0ff0,
        dr7: 0x400,
        ..Default::default()
    };
    VcpuState {
        id,
        cpuid,
        mp_state: kvm_mp_state { mp_state: id % 2 },
        regs,
        sregs,
        xsave,
        xcrs,
        msrs,
        lapic,
        events,
        debugregs,
    }
}

pub fn irqchip() -> IrqchipState {
    let mut pic_master = kvm_irqchip::default();
    pic_master.chip.dummy = std::array::from_fn(|i| (i % 97) as _);
    let mut pic_slave = kvm_irqchip {
        chip_id: 1,
        ..Default::default()
    };
    pic_slave.chip.dummy = std::array::from_fn(|i| (i % 89 + 1) as _);
    let mut ioapic = kvm_irqchip {
        chip_id: 2,
        ..Default::default()
    };
    ioapic.chip.dummy = std::array::from_fn(|i| (i % 83 + 2) as _);
    let mut pit = kvm_pit_state2::default();
    pit.channels[0].count = 0x1234;
    pit.channels[0].mode = 2;
    pit.channels[2].gate = 1;
    pit.flags = 1;
    let clock = kvm_clock_data {
        clock: 123_456_789_012,
        flags: 2,
        ..Default::default()
    };
    IrqchipState {
        pic_master,
        pic_slave,
        ioapic,
        pit,
        clock,
    }
}

pub fn state(config: &VmConfig) -> VmState {
    VmState {
        version: STATE_VERSION,
        config: config.clone(),
        vcpus: (0..config.vcpus).map(vcpu).collect(),
        irqchip: irqchip(),
        devices: DeviceState {
            serial: SerialState {
                line_control: 0x03,
                line_status: 0x60,
                modem_control: 0x08,
                scratch: 0x5a,
                in_buffer: b"ok\n".to_vec(),
                pending_line: b"heartbeat seq=41".to_vec(),
                ..Default::default()
            },
        },
    }
}

/// CBOR bytes of any value: equal bytes mean equal values (kvm structs
/// serialize as their raw bytes).
pub fn cbor<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("serialize");
    out
}

/// One region's memory with every `stride`-th page written with a pattern
/// derived from (page, salt); the rest stays zero.
pub fn memory(len: u64, stride: usize, salt: u64) -> Vec<u8> {
    let mut mem = vec![0u8; len as usize];
    for (i, page) in mem.chunks_exact_mut(PAGE).enumerate() {
        if i % stride == 0 {
            let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt;
            for w in page.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
        }
    }
    mem
}

/// Rebuilds guest memory from a snapshot, one zeroed Vec per region.
#[derive(Default)]
pub struct MemSink {
    pub config: Option<VmConfig>,
    pub regions: Vec<(u64, Vec<u8>)>,
    pub page_calls: u64,
    pub zero_calls: u64,
}

impl MemSink {
    fn slot(&mut self, gpa: u64, len: usize) -> Result<&mut [u8], SinkError> {
        for (start, mem) in &mut self.regions {
            if gpa >= *start && gpa - *start + len as u64 <= mem.len() as u64 {
                let off = (gpa - *start) as usize;
                return Ok(&mut mem[off..off + len]);
            }
        }
        Err(format!("no memory at {gpa:#x}").into())
    }
}

impl SnapshotSink for MemSink {
    fn config(&mut self, config: &VmConfig) -> Result<(), SinkError> {
        self.regions = config
            .regions
            .iter()
            .map(|&(start, len)| (start, vec![0u8; len as usize]))
            .collect();
        self.config = Some(config.clone());
        Ok(())
    }

    fn pages(&mut self, gpa: u64, data: &[u8]) -> Result<(), SinkError> {
        self.page_calls += 1;
        self.slot(gpa, data.len())?.copy_from_slice(data);
        Ok(())
    }

    fn zero_pages(&mut self, gpa: u64, count: u64) -> Result<(), SinkError> {
        self.zero_calls += 1;
        self.slot(gpa, count as usize * PAGE)?.fill(0);
        Ok(())
    }
}

/// A sink that accepts everything and keeps nothing.
pub struct NullSink;

impl SnapshotSink for NullSink {
    fn config(&mut self, _: &VmConfig) -> Result<(), SinkError> {
        Ok(())
    }
    fn pages(&mut self, _: u64, _: &[u8]) -> Result<(), SinkError> {
        Ok(())
    }
    fn zero_pages(&mut self, _: u64, _: u64) -> Result<(), SinkError> {
        Ok(())
    }
}
