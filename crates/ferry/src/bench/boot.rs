//! `ferry bench boot`: from starting the VMM process to the guest's first
//! heartbeat, Ferry and QEMU.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use yardstick::bench::{median, ratio};
use yardstick::table::Table;

use super::ms;

/// Spawns `ferry run --guest idle` and times its first heartbeat on stdout.
fn ferry_boot_once() -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let start = Instant::now();
    let mut child = Command::new(exe)
        .args(["run", "--guest", "idle", "--memory", "256M"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start ferry run")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut found = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line.starts_with("HB ") {
            found = Some(ms(start.elapsed()));
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    found.context("ferry run ended before the first heartbeat")
}

pub fn run(reps: usize, json: bool) -> anyhow::Result<()> {
    let image = yardstick::ImageFile::new("idle.elf", crate::guests::image("idle")?)?;
    let mut cfg = yardstick::QemuConfig::new(image.path());
    cfg.memory_mib = 256;
    let (mut f, mut q) = (Vec::new(), Vec::new());
    for i in 0..reps {
        eprintln!("boot: run {}/{reps}", i + 1);
        f.push(ferry_boot_once()?);
        q.push(yardstick::measure_boot(&cfg, Duration::from_secs(20))?.first_heartbeat_ms);
    }
    let (fm, qm) = (median(&f).unwrap_or(0.0), median(&q).unwrap_or(0.0));
    let mut t = Table::new([
        "guest",
        "Ferry first heartbeat (ms)",
        "QEMU first heartbeat (ms)",
        "Ferry/QEMU",
    ]);
    t.row([
        "idle, 256 MiB, 1 vCPU".to_string(),
        format!("{fm:.1}"),
        format!("{qm:.1}"),
        ratio(fm, qm),
    ]);
    let doc = serde_json::json!({
        "guest": "idle", "memory_bytes": 256u64 << 20, "vcpus": 1, "reps": reps,
        "ferry_first_heartbeat_ms": { "median": fm, "samples": f },
        "qemu_first_heartbeat_ms": { "median": qm, "samples": q },
    });
    super::print(
        &format!(
            "Time from starting the VMM process to the guest's first heartbeat, median of {reps} runs."
        ),
        &t,
        json.then_some(doc),
    )
}
