//! Where guest serial output goes: stdout or a file, optionally stamped
//! with the host time at which each line was printed (`[seconds.micros]`,
//! the format demos and benchmarks read back for the guest's downtime).

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use guest::stamp::Stamper;

/// Where a hosted VM's serial output goes.
#[derive(Debug, Clone, Default)]
pub struct SerialConfig {
    /// A file, or stdout when `None`.
    pub path: Option<PathBuf>,
    /// Stamp each line with host time (seconds since the epoch).
    pub timestamps: bool,
    /// Add to the file rather than start it afresh (a restarted source
    /// keeps the output of the process it replaces).
    pub append: bool,
}

impl SerialConfig {
    /// The VMM's serial sink. Bytes are written out as the guest writes
    /// them. With `timestamps`, each complete line is prefixed with
    /// `[seconds.micros]`: its arrival time corrected by the TSC stamps in
    /// the guest's heartbeat lines (`tsc_khz`, 0 if unknown, until the
    /// guest's READY line says better); an unfinished line waits for its
    /// newline.
    pub fn sink(&self, tsc_khz: u64) -> anyhow::Result<vmm::SerialSink> {
        let mut out: Box<dyn Write + Send> = match &self.path {
            Some(p) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(self.append)
                    .truncate(!self.append)
                    .open(p)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot create serial log {}: {e}", p.display())
                    })?;
                Box::new(io::BufWriter::new(f))
            }
            None => Box::new(io::stdout()),
        };
        let timestamps = self.timestamps;
        let mut stamper = Stamper::new(tsc_khz);
        Ok(Box::new(move |bytes: &[u8], at: SystemTime| {
            if timestamps {
                let arrival = at
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                for l in stamper.push(bytes, arrival) {
                    if let guest::output::Line::Ready { tsc_khz, .. } = l.line {
                        stamper.set_tsc_khz(tsc_khz);
                    }
                    let _ = writeln!(out, "[{:.6}] {}", l.time, l.text);
                }
            } else {
                let _ = out.write_all(bytes);
            }
            let _ = out.flush();
        }))
    }
}
