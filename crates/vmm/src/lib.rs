//! Ferry's micro-VMM: a KVM virtual machine that boots Multiboot kernels,
//! runs them on one thread per vCPU, and can save and restore every bit of
//! its state.

pub mod cpu;
pub mod devices;
pub mod memory;
pub mod mptable;
pub mod multiboot;
pub mod snapshot;
pub mod vcpu;
pub mod vm;

pub use devices::SerialSink;
pub use vcpu::ExitReason;
pub use vm::{BootSpec, RunState, Vm, open_kvm};

/// What went wrong, in terms an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NoKvm(String),
    #[error("{0} failed: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    #[error("bad kernel: {0}")]
    Kernel(String),
    #[error("guest memory: {0}")]
    MemorySize(String),
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("cannot restore: {0}")]
    Restore(String),
    #[error("{0}")]
    State(String),
    #[error("the VM is not running: {0:?}")]
    NotRunning(ExitReason),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
