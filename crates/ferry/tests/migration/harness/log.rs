//! What a guest's serial log says.

use std::fs;
use std::path::Path;

#[derive(Debug, Default)]
pub struct Serial {
    pub heartbeats: Vec<u64>,
    /// Guest TSC of each heartbeat (the host's TSC: it is not virtualized).
    pub heartbeat_tsc: Vec<u64>,
    /// Each heartbeat's line, without its timestamp.
    pub heartbeat_lines: Vec<String>,
    pub verify_ok: usize,
    pub verify_fail: Vec<String>,
}

pub fn read_serial(path: &Path) -> Serial {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut s = Serial::default();
    // The last line may be half written.
    for line in text.lines().filter(|l| !l.is_empty()) {
        let body = line.split_once("] ").map_or(line, |(_, b)| b);
        if let Some(rest) = body.strip_prefix("HB seq=") {
            let mut words = rest.split_whitespace();
            let seq = words.next().and_then(|n| n.parse().ok());
            let tsc = words
                .next()
                .and_then(|w| w.strip_prefix("tsc="))
                .and_then(|n| n.parse().ok());
            // A whole line only: a source that takes the VM back after a
            // post-copy switch ends the half line it held with its next
            // heartbeat (docs/SAFETY.md, "Known gaps").
            let whole = words.next().is_some_and(|w| {
                w.strip_prefix("rate=")
                    .is_some_and(|n| n.parse::<u64>().is_ok())
            }) && words.next().is_none();
            if let (Some(seq), Some(tsc), true) = (seq, tsc, whole) {
                s.heartbeats.push(seq);
                s.heartbeat_tsc.push(tsc);
                s.heartbeat_lines.push(body.to_string());
            }
        } else if body.starts_with("VERIFY ok") {
            s.verify_ok += 1;
        } else if body.starts_with("VERIFY FAIL") {
            s.verify_fail.push(line.to_string());
        }
    }
    s
}

impl Serial {
    /// The heartbeats without the lines cut by a switch, judged against
    /// this log and `other` ([`yardstick::serial::whole_beats`]): a source
    /// that takes the VM back ends the line it had left unfinished, which
    /// may stop inside `rate=` and so look whole here.
    pub fn whole_against(&self, other: &Serial) -> Vec<u64> {
        let beats: Vec<(u64, &str)> = [self, other]
            .iter()
            .flat_map(|log| {
                log.heartbeats
                    .iter()
                    .copied()
                    .zip(log.heartbeat_lines.iter().map(String::as_str))
            })
            .collect();
        let whole = yardstick::serial::whole_beats(&beats);
        self.heartbeats
            .iter()
            .zip(whole)
            .filter(|(_, w)| *w)
            .map(|(&seq, _)| seq)
            .collect()
    }
}
