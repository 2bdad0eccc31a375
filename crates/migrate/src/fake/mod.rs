//! An in-memory VM for testing the engine without KVM: real guest memory
//! (`GuestMemoryMmap`), a "guest" thread that writes pages at a set rate
//! with content derived from (page, generation) and records its own dirty
//! bits, and pause/resume that stop that thread at a write boundary. The
//! destination side records what the engine did to it (created, restored,
//! resumed, discarded) so tests can check that nothing ran before Commit.
//!
//! `spec` describes the guest, `guest` is its writing thread, `source` the
//! source VM, `dest` the destination side.

mod dest;
mod guest;
mod postcopy;
mod source;
mod spec;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmstate::{DeviceState, IrqchipState, STATE_VERSION, VcpuState, VmConfig, VmState};

use crate::vm::VmError;

pub use dest::{DestLog, FakeDestVm, FakeFactory};
pub use guest::{RunState, pattern_word};
pub use postcopy::FakePostcopy;
pub use source::{FakeFaults, FakeVm};
pub use spec::{FakeSpec, WritePattern};

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
