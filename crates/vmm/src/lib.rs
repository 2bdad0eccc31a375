//! Ferry's micro-VMM: a KVM virtual machine that boots Multiboot kernels,
//! runs them on one thread per vCPU, and can save and restore every bit of
//! its state.

pub mod cpu;
pub mod devices;
mod error;
pub mod memory;
pub mod mptable;
pub mod multiboot;
pub mod postcopy;
pub mod snapshot;
pub mod throttle;
pub mod vcpu;
pub mod vm;

pub use devices::SerialSink;
pub use error::Error;
pub use multiboot::KernelError;
pub use vcpu::ExitReason;
pub use vm::{BootSpec, FenceHandle, MAX_VCPUS, RunState, Vm, open_kvm};
