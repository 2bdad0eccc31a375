//! `ferry bench snapshot`: snapshot to a file and restore into a new VM.

use std::path::Path;
use std::time::Instant;

use units::ByteSize;
use yardstick::bench::median;
use yardstick::table::Table;

use super::{ms, warm_dirtier};

pub fn run(sizes: &[ByteSize], reps: usize, dir: &Path, json: bool) -> anyhow::Result<()> {
    let mut doc = Vec::new();
    let mut t = Table::new([
        "guest",
        "written",
        "snapshot size",
        "snapshot (ms)",
        "snapshot GiB/s of guest",
        "snapshot GiB/s of data",
        "restore (ms)",
        "restore GiB/s of guest",
        "restore GiB/s of data",
    ]);
    for size in sizes {
        let memory = size.bytes();
        let ws = memory / 4;
        eprintln!(
            "snapshot: booting a {size} dirtier and writing {}",
            units::format_bytes(ws)
        );
        let host = warm_dirtier(memory, ws, "seq")?;
        let path = dir.join(format!("ferry-bench-{memory}.snap"));
        let (mut save_ms, mut restore_ms, mut bytes) = (Vec::new(), Vec::new(), 0);
        for i in 0..reps {
            eprintln!("snapshot: {size} run {}/{reps}", i + 1);
            let d = host.snapshot(&path)?;
            save_ms.push(d.duration_ms);
            bytes = d.bytes;
            let start = Instant::now();
            let file = std::fs::File::open(&path)?;
            let (vm, _) =
                vmm::snapshot::restore(file, Box::new(|_, _| {}), &vmstate::ReadLimits::default())?;
            restore_ms.push(ms(start.elapsed()));
            drop(vm);
        }
        let _ = std::fs::remove_file(&path);
        let gib = memory as f64 / (1u64 << 30) as f64;
        let data_gib = bytes as f64 / (1u64 << 30) as f64;
        let (s, r) = (
            median(&save_ms).unwrap_or(0.0),
            median(&restore_ms).unwrap_or(0.0),
        );
        doc.push(serde_json::json!({
            "memory_bytes": memory, "written_bytes": ws, "snapshot_bytes": bytes,
            "snapshot_ms": { "median": s, "samples": save_ms },
            "restore_ms": { "median": r, "samples": restore_ms },
        }));
        t.row([
            size.to_string(),
            units::format_bytes(ws),
            units::format_bytes(bytes),
            format!("{s:.0}"),
            format!("{:.2}", gib / (s / 1e3)),
            format!("{:.2}", data_gib / (s / 1e3)),
            format!("{r:.0}"),
            format!("{:.2}", gib / (r / 1e3)),
            format!("{:.2}", data_gib / (r / 1e3)),
        ]);
    }
    let doc = serde_json::json!({ "reps": reps, "sizes": doc });
    super::print(
        &format!(
            "Snapshot to a file (written, fsynced, renamed) and restore into a new VM, median of {reps} runs."
        ),
        &t,
        json.then_some(doc),
    )
}
