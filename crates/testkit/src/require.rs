//! Preconditions: a test that needs KVM or QEMU fails when they are
//! missing, so a machine without them cannot pass the suite by skipping.

use std::path::PathBuf;

/// The QEMU binary the tests boot guests with (looked up on `PATH`).
pub const QEMU: &str = "qemu-system-x86_64";

/// Panics unless `/dev/kvm` opens for reading and writing.
pub fn require_kvm() {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        panic!("these tests need /dev/kvm (read/write): {e}");
    }
}

/// Panics unless KVM is usable and [`QEMU`] is on `PATH`; returns its path.
pub fn require_qemu() -> PathBuf {
    require_kvm();
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(QEMU))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("these tests need {QEMU} on PATH (apt-get install qemu-system-x86)")
        })
}
