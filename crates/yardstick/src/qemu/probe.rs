//! What the host offers QEMU: KVM, the QEMU binary, the TSC frequency.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;

use super::config::DEFAULT_CPU;
use super::image::temp_dir;
use super::launch::Launch;
use crate::error::Error;

/// The host's TSC frequency in Hz as QEMU/KVM sees it (KVM_GET_TSC_KHZ),
/// read over QMP from a paused QEMU with `+invtsc`. Probed once per process
/// and cached.
pub fn host_tsc_hz(binary: &Path) -> Result<u64, Error> {
    static CACHE: OnceLock<u64> = OnceLock::new();
    if let Some(hz) = CACHE.get() {
        return Ok(*hz);
    }
    check_kvm()?;
    let dir = temp_dir()?;
    let qmp_sock = dir.path().join("probe.sock");
    let timeout = Duration::from_secs(10);
    let args = [
        "-enable-kvm".to_string(),
        "-cpu".into(),
        format!("{DEFAULT_CPU},+invtsc"),
        "-S".into(),
        "-nodefaults".into(),
        "-display".into(),
        "none".into(),
        "-m".into(),
        "16M".into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", qmp_sock.display()),
    ];
    let mut launch = Launch::spawn(binary, &args, timeout)?;
    let mut qmp = launch.connect_qmp(&qmp_sock, timeout, "probing the TSC frequency")?;
    let cpus = qmp.execute("query-cpus-fast", None)?;
    let path = cpus[0]["qom-path"].as_str().ok_or_else(|| Error::Reply {
        command: "query-cpus-fast".into(),
        detail: cpus.to_string(),
    })?;
    let hz = qmp.execute(
        "qom-get",
        Some(json!({"path": path, "property": "tsc-frequency"})),
    )?;
    let hz = hz.as_u64().filter(|&h| h > 0).ok_or_else(|| Error::Reply {
        command: "qom-get tsc-frequency".into(),
        detail: hz.to_string(),
    })?;
    let _ = qmp.execute("quit", None);
    drop(launch);
    Ok(*CACHE.get_or_init(|| hz))
}

/// Checks that `qemu-system-x86_64` (or `binary`) runs and returns its
/// version line.
pub fn qemu_version(binary: &Path) -> Result<String, Error> {
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::QemuNotFound {
            binary: binary.display().to_string(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// Checks for a usable /dev/kvm without starting anything.
pub fn check_kvm() -> Result<(), Error> {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(drop)
        .map_err(|source| Error::Kvm { source })
}
