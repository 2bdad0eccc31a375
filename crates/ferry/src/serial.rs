//! Where guest serial output goes: stdout or a file, optionally stamped with host time.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Builds the VMM's serial sink.
pub fn sink(path: Option<&Path>, timestamps: bool) -> anyhow::Result<vmm::SerialSink> {
    let mut out: Box<dyn Write + Send> = match path {
        Some(p) => Box::new(io::BufWriter::new(File::create(p).map_err(|e| {
            anyhow::anyhow!("cannot create serial log {}: {e}", p.display())
        })?)),
        None => Box::new(io::stdout()),
    };
    Ok(Box::new(move |lines: &[u8], at: SystemTime| {
        if timestamps {
            let t = at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            for line in lines.split_inclusive(|&b| b == b'\n') {
                let _ = write!(out, "[{t:.6}] ");
                let _ = out.write_all(line);
            }
        } else {
            let _ = out.write_all(lines);
        }
        let _ = out.flush();
    }))
}
