//! Host time of each guest line. Guests batch their serial output and end
//! every batch with a heartbeat carrying the guest TSC, so the host can place
//! each line in time: `arrival - (tsc_of_last_heartbeat - tsc_of_line) / freq`.
//! The TSC here is the host's (not virtualised), but only TSC differences
//! within one batch are used, so that does not matter.

use crate::output::{Line, parse_line};

/// Host times (seconds, same clock as `arrival`) of a batch of complete
/// `lines` that arrived at `arrival`. A line without a TSC gets the time of
/// the next line with one, or `arrival` if none follows.
pub fn stamp(lines: &[Line], arrival: f64, tsc_khz: u64) -> Vec<f64> {
    let hz = tsc_khz as f64 * 1000.0;
    let last = lines.iter().rev().find_map(Line::tsc);
    let mut out = vec![arrival; lines.len()];
    let (Some(last), true) = (last, hz > 0.0) else {
        return out;
    };
    let mut next: Option<f64> = None;
    for (i, line) in lines.iter().enumerate().rev() {
        if let Some(tsc) = line.tsc() {
            // A TSC after the batch's last one (cannot happen) counts as the last.
            let back = last.saturating_sub(tsc) as f64 / hz;
            next = Some(arrival - back);
        }
        out[i] = next.unwrap_or(arrival);
    }
    out
}

/// A guest line with its host time.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    /// Host time in seconds (the clock `arrival` was given in).
    pub time: f64,
    pub line: Line,
    /// The line as the guest printed it, without its line ending.
    pub text: String,
}

/// Splits a serial stream into lines and stamps them batch by batch. Bytes
/// after the last newline wait for the next [`Stamper::push`].
#[derive(Debug, Clone)]
pub struct Stamper {
    tsc_khz: u64,
    partial: Vec<u8>,
}

impl Stamper {
    /// A stamper for a guest whose TSC runs at `tsc_khz` (see the READY line;
    /// 0 until known: lines then get their arrival time).
    pub fn new(tsc_khz: u64) -> Stamper {
        Stamper {
            tsc_khz,
            partial: Vec::new(),
        }
    }

    /// Sets the TSC frequency (e.g. from the READY line).
    pub fn set_tsc_khz(&mut self, tsc_khz: u64) {
        self.tsc_khz = tsc_khz;
    }

    /// Adds `bytes` that arrived at `arrival` and returns the complete lines.
    pub fn push(&mut self, bytes: &[u8], arrival: f64) -> Vec<Stamped> {
        self.partial.extend_from_slice(bytes);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let text = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial = rest;
        let raw: Vec<&str> = text.lines().collect();
        let lines: Vec<Line> = raw.iter().map(|l| parse_line(l)).collect();
        if self.tsc_khz == 0
            && let Some(Line::Ready { tsc_khz, .. }) =
                lines.iter().find(|l| matches!(l, Line::Ready { .. }))
        {
            self.tsc_khz = *tsc_khz;
        }
        let times = stamp(&lines, arrival, self.tsc_khz);
        times
            .into_iter()
            .zip(lines)
            .zip(raw)
            .map(|((time, line), text)| Stamped {
                time,
                line,
                text: text.to_string(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(seq: u64, tsc: u64) -> Line {
        Line::Heartbeat { seq, tsc, rate: 0 }
    }

    #[test]
    fn lines_are_placed_back_from_the_last_heartbeat() {
        // 1 GHz TSC: 1 tick = 1 ns.
        let lines = vec![
            Line::Other("before".into()),
            hb(0, 1_000_000),
            Line::Other("verify".into()),
            hb(1, 3_000_000),
            hb(2, 4_000_000),
        ];
        let t = stamp(&lines, 100.0, 1_000_000);
        let want = [99.997, 99.997, 99.999, 99.999, 100.0];
        for (got, want) in t.iter().zip(want) {
            assert!((got - want).abs() < 1e-9, "{t:?}");
        }
    }

    #[test]
    fn no_heartbeat_or_trailing_lines_get_the_arrival_time() {
        let t = stamp(
            &[Line::Other("a".into()), Line::Other("b".into())],
            5.0,
            1000,
        );
        assert_eq!(t, vec![5.0, 5.0]);
        let t = stamp(&[hb(0, 2_000), Line::Other("late".into())], 5.0, 1000);
        assert_eq!(t, vec![5.0, 5.0]);
        assert!(stamp(&[], 1.0, 1).is_empty());
        // Unknown frequency: everything at arrival.
        assert_eq!(stamp(&[hb(0, 1), hb(1, 1_000_000)], 2.0, 0), vec![2.0, 2.0]);
    }

    #[test]
    fn stamper_keeps_partial_lines_and_learns_the_frequency() {
        let mut s = Stamper::new(0);
        let out = s.push(
            b"READY guest=idle vcpus=1 mem=1 tsc_khz=1000\nHB seq=0 tsc=5000 rate=0\nHB seq=1 tsc=",
            10.0,
        );
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|s| s.time == 10.0));
        let out = s.push(b"8000 rate=0\nHB seq=2 tsc=9000 rate=0\n", 20.0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].line, hb(1, 8000));
        // 1000 kHz: 1000 ticks = 1 ms.
        assert!((out[0].time - 19.999).abs() < 1e-9);
        assert_eq!(out[1].time, 20.0);
        assert!(s.push(b"VERIFY ok", 21.0).is_empty());
        let out = s.push(b" pages=1 gen=1\r\n", 22.0);
        assert_eq!(out[0].text, "VERIFY ok pages=1 gen=1");
    }
}
