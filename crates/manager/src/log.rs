//! The decision log: one JSON object per line for every decision and its
//! reason (leadership, each interval's pattern and hotspots, each order
//! issued and why, each move left out, each order's end, each report left
//! out), appended to a file and echoed to the process log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

/// Where decisions are written.
pub struct DecisionLog {
    file: Option<File>,
}

impl DecisionLog {
    /// Appends to `path`, or only to the process log when None.
    pub fn open(path: Option<&Path>) -> anyhow::Result<DecisionLog> {
        let file = path
            .map(|p| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("cannot open the decision log {}", p.display()))
            })
            .transpose()?;
        Ok(DecisionLog { file })
    }

    /// Writes `event` (an object) with `"event": kind` and the time.
    pub fn write(&mut self, kind: &str, mut event: Value) {
        if let Value::Object(m) = &mut event {
            m.insert("event".into(), kind.into());
            m.insert("unix_ms".into(), agent::unix_ms().into());
        }
        let line = event.to_string();
        tracing::info!(target: "ferry::decision", "{line}");
        if let Some(f) = &mut self.file
            && let Err(e) = writeln!(f, "{line}").and_then(|()| f.flush())
        {
            tracing::warn!("cannot write the decision log: {e}");
        }
    }
}
