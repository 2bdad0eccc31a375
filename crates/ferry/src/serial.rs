//! Where guest serial output goes: stdout or a file, optionally stamped
//! with the host time at which each line was printed.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use guest::output::{Line, parse_line};

/// Builds the VMM's serial sink. With `timestamps`, each line is prefixed
/// with `[seconds.micros]`: the batch's arrival time corrected by the TSC
/// stamps in the guest's heartbeat lines (`tsc_khz` until the guest's READY
/// line says better).
pub fn sink(
    path: Option<&Path>,
    timestamps: bool,
    tsc_khz: u64,
) -> anyhow::Result<vmm::SerialSink> {
    let mut out: Box<dyn Write + Send> = match path {
        Some(p) => Box::new(io::BufWriter::new(File::create(p).map_err(|e| {
            anyhow::anyhow!("cannot create serial log {}: {e}", p.display())
        })?)),
        None => Box::new(io::stdout()),
    };
    let mut khz = tsc_khz;
    Ok(Box::new(move |bytes: &[u8], at: SystemTime| {
        if timestamps {
            let arrival = at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let text = String::from_utf8_lossy(bytes);
            let raw: Vec<&str> = text.lines().collect();
            let parsed: Vec<Line> = raw.iter().map(|l| parse_line(l)).collect();
            if let Some(Line::Ready { tsc_khz, .. }) =
                parsed.iter().find(|l| matches!(l, Line::Ready { .. }))
            {
                khz = *tsc_khz;
            }
            let times = guest::stamp::stamp(&parsed, arrival, khz);
            for (t, l) in times.iter().zip(raw) {
                let _ = writeln!(out, "[{t:.6}] {l}");
            }
        } else {
            let _ = out.write_all(bytes);
        }
        let _ = out.flush();
    }))
}

/// Reads a log written with timestamps (`[seconds] line`); lines without a
/// stamp are skipped.
pub fn read_stamped_log(path: &Path) -> anyhow::Result<Vec<yardstick::SerialLine>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read serial log {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('[')?;
            let (t, line) = rest.split_once("] ")?;
            let time: f64 = t.parse().ok()?;
            Some(yardstick::SerialLine {
                arrival: time,
                time,
                text: line.to_string(),
            })
        })
        .collect())
}

/// The largest gap between heartbeats, across both logs, between `from` and
/// `until` (UNIX seconds), in ms: the downtime the guest saw.
pub fn guest_downtime_ms(
    src: &Path,
    dst: &Path,
    from: f64,
    until: f64,
) -> anyhow::Result<Option<f64>> {
    let (a, b) = (read_stamped_log(src)?, read_stamped_log(dst)?);
    Ok(yardstick::serial::max_heartbeat_gap(&[&a, &b], from, until).map(|g| g.seconds * 1e3))
}
