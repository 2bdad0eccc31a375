//! Where guest serial output goes: stdout or a file, optionally stamped
//! with the host time at which each line was printed (`[seconds.micros]`,
//! the format demos and benchmarks read back for the guest's downtime).

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use guest::output::{Line, parse_line};

/// Where a hosted VM's serial output goes.
#[derive(Debug, Clone, Default)]
pub struct SerialConfig {
    /// A file, or stdout when `None`.
    pub path: Option<PathBuf>,
    /// Stamp each line with host time (seconds since the epoch).
    pub timestamps: bool,
}

impl SerialConfig {
    /// The VMM's serial sink. With `timestamps`, each line is prefixed with
    /// `[seconds.micros]`: the batch's arrival time corrected by the TSC
    /// stamps in the guest's heartbeat lines (`tsc_khz`, 0 if unknown,
    /// until the guest's READY line says better).
    pub fn sink(&self, tsc_khz: u64) -> anyhow::Result<vmm::SerialSink> {
        let mut out: Box<dyn Write + Send> = match &self.path {
            Some(p) => Box::new(io::BufWriter::new(File::create(p).map_err(|e| {
                anyhow::anyhow!("cannot create serial log {}: {e}", p.display())
            })?)),
            None => Box::new(io::stdout()),
        };
        let timestamps = self.timestamps;
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
}
