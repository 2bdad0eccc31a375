//! Launching and controlling one QEMU process for a Multiboot guest.
//!
//! QEMU connects its serial port to a Unix socket we listen on (so no output
//! is lost before we are ready, and nothing blocks), and offers QMP on a
//! second Unix socket. Both live in a private temporary directory that is
//! removed with the [`Qemu`] value; dropping a [`Qemu`] kills the process.
//!
//! - [`config`](QemuConfig): what to start, and the exact command line.
//! - `launch`: a QEMU being started, killed if starting fails half way.
//! - [`Qemu`]: the running process, its QMP session and serial log.
//! - [`measure_boot`]: spawn to the first heartbeat.
//! - [`host_tsc_hz`], [`qemu_version`], [`check_kvm`]: probes of the host.
//! - [`ImageFile`]: guest image bytes in a temporary file.

mod boot;
mod config;
mod image;
mod launch;
mod probe;
mod process;

pub use boot::{BootTime, measure_boot};
pub use config::{DEFAULT_CPU, Firmware, QBOOT_PATH, QemuConfig, StampFnFactory};
pub use image::ImageFile;
pub use probe::{check_kvm, host_tsc_hz, qemu_version};
pub use process::{Qemu, guest_exit_value};
