//! QEMU as Ferry's measuring stick, and the benchmark helpers Ferry's
//! benchmarks share.
//!
//! - [`qemu`]: start QEMU for a Multiboot guest image with serial capture
//!   and QMP; measure boot time to the first heartbeat.
//! - [`qmp`]: a QMP client.
//! - [`migration`]: QEMU-to-QEMU live migration on loopback, measured into
//!   a [`QemuMigration`]; [`sampled`]: its guest-visible downtime from the
//!   guest's pass counters in both QEMU processes.
//! - [`serial`]: timestamped serial logs, heartbeats, and the guest-visible
//!   downtime computation used for both QEMU and Ferry.
//! - [`guests`]: Ferry's guest programs under QEMU (image, TSC stamping).
//! - [`bench`], [`table`], [`plot`]: medians, repetitions, ratios, tables
//!   and SVG plots.
//!
//! See docs/QEMU.md for the exact QEMU flags and how QEMU's numbers map to
//! Ferry's report.

pub mod bench;
pub mod error;
pub mod guests;
pub mod migration;
pub mod plot;
pub mod qemu;
pub mod qmp;
pub mod sampled;
pub mod serial;
pub mod table;
pub mod testkernel;

pub use error::Error;
pub use migration::{
    MigrationParams, MigrationRun, QemuMigration, QemuOutcome, migrate_guest, migrate_guest_after,
};
pub use qemu::{BootTime, Firmware, ImageFile, Qemu, QemuConfig, measure_boot};
pub use qmp::{Qmp, QmpError};
pub use serial::{SerialLine, SerialLog};
