//! Serial capture with host timestamps, heartbeat parsing, and the
//! guest-visible downtime computation shared by Ferry and QEMU runs.
//!
//! Every line is stamped with host wall time (seconds since the UNIX epoch,
//! f64) when its terminating newline arrives. Guests batch their serial
//! output, so all lines of one batch arrive together; a [`StampFn`] can
//! refine each line's time within its batch (e.g. from a TSC value the guest
//! printed), which is what makes heartbeat gaps exact.

use std::io::Read;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Host wall-clock time now, in seconds since the UNIX epoch.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One line of guest serial output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SerialLine {
    /// Host wall time when the line's newline arrived (UNIX seconds).
    pub arrival: f64,
    /// Best estimate of when the guest printed the line (UNIX seconds):
    /// `arrival` unless a [`StampFn`] refined it.
    pub time: f64,
    /// The line without its line ending.
    pub text: String,
}

/// Refines the times of one batch of lines that arrived together at
/// `arrival`. Returns one time per line (UNIX seconds); a result of another
/// length is ignored and every line keeps `arrival`.
pub type StampFn = Box<dyn FnMut(&[String], f64) -> Vec<f64> + Send>;

#[derive(Debug, Default)]
struct LogState {
    lines: Vec<SerialLine>,
    closed: bool,
}

/// A growing, shareable log of serial lines (cheap to clone; clones share
/// the same lines).
#[derive(Debug, Clone, Default)]
pub struct SerialLog {
    inner: Arc<(Mutex<LogState>, Condvar)>,
}

impl SerialLog {
    /// An empty, open log.
    pub fn new() -> SerialLog {
        SerialLog::default()
    }

    /// Spawns a thread that reads `reader` until EOF or error, splits it into
    /// lines, stamps them and appends them to a new log. The log is marked
    /// closed when the reader ends.
    pub fn capture<R: Read + Send + 'static>(
        reader: R,
        stamper: Option<StampFn>,
    ) -> (SerialLog, JoinHandle<()>) {
        let log = SerialLog::new();
        let writer = log.clone();
        let handle = std::thread::Builder::new()
            .name("yardstick-serial".into())
            .spawn(move || writer.pump(reader, stamper))
            .expect("spawning a thread");
        (log, handle)
    }

    fn pump<R: Read>(&self, mut reader: R, mut stamper: Option<StampFn>) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let arrival = now();
            pending.extend_from_slice(&buf[..n]);
            let Some(last_nl) = pending.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            let rest = pending.split_off(last_nl + 1);
            let batch: Vec<String> = pending[..last_nl]
                .split(|&b| b == b'\n')
                .map(|l| {
                    let l = l.strip_suffix(b"\r").unwrap_or(l);
                    String::from_utf8_lossy(l).into_owned()
                })
                .collect();
            pending = rest;
            self.push_batch(batch, arrival, stamper.as_mut());
        }
        if !pending.is_empty() {
            let text = String::from_utf8_lossy(&pending).into_owned();
            self.push_batch(vec![text], now(), stamper.as_mut());
        }
        let (lock, cv) = &*self.inner;
        lock_state(lock).closed = true;
        cv.notify_all();
    }

    fn push_batch(&self, batch: Vec<String>, arrival: f64, stamper: Option<&mut StampFn>) {
        let times = stamper
            .map(|s| s(&batch, arrival))
            .filter(|t| t.len() == batch.len())
            .unwrap_or_else(|| vec![arrival; batch.len()]);
        let (lock, cv) = &*self.inner;
        let mut state = lock_state(lock);
        for (text, time) in batch.into_iter().zip(times) {
            state.lines.push(SerialLine {
                arrival,
                time,
                text,
            });
        }
        cv.notify_all();
    }

    /// Appends one line (for logs fed by other sources, and tests).
    pub fn push(&self, line: SerialLine) {
        let (lock, cv) = &*self.inner;
        lock_state(lock).lines.push(line);
        cv.notify_all();
    }

    /// Marks the log as complete: waiters stop waiting for more lines.
    pub fn close(&self) {
        let (lock, cv) = &*self.inner;
        lock_state(lock).closed = true;
        cv.notify_all();
    }

    /// A copy of all lines so far.
    pub fn lines(&self) -> Vec<SerialLine> {
        lock_state(&self.inner.0).lines.clone()
    }

    /// Number of lines so far.
    pub fn len(&self) -> usize {
        lock_state(&self.inner.0).lines.len()
    }

    /// True when no line has arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once the reader ended (QEMU closed the serial connection).
    pub fn is_closed(&self) -> bool {
        lock_state(&self.inner.0).closed
    }

    /// Waits until a line at index `from` or later satisfies `pred`; returns
    /// its index and a copy. `None` on timeout, or when the log is closed
    /// without such a line.
    pub fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        mut pred: impl FnMut(&SerialLine) -> bool,
    ) -> Option<(usize, SerialLine)> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.inner;
        let mut state = lock_state(lock);
        let mut next = from;
        loop {
            while next < state.lines.len() {
                if pred(&state.lines[next]) {
                    return Some((next, state.lines[next].clone()));
                }
                next += 1;
            }
            if state.closed {
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = cv
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The log as text, one `time text` line per serial line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for l in lock_state(&self.inner.0).lines.iter() {
            out.push_str(&format!("{:.6} {}\n", l.time, l.text));
        }
        out
    }
}

fn lock_state(lock: &Mutex<LogState>) -> MutexGuard<'_, LogState> {
    lock.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sequence number of a heartbeat line (`HB seq=N ...`), if it is one.
pub fn heartbeat_seq(text: &str) -> Option<u64> {
    let rest = text.trim_start().strip_prefix("HB seq=")?;
    let digits: &str = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// True for a heartbeat line.
pub fn is_heartbeat(line: &SerialLine) -> bool {
    heartbeat_seq(&line.text).is_some()
}

/// Which of `beats` (sequence number, line text) are heartbeats of their
/// own. A line cut by a switch is not: a VM that comes back to a host ends
/// the half line it had left there (stamped then), and the whole line was
/// printed where it ran meanwhile, or right after as a replay. So a line
/// that begins a longer one of the same number, or repeats an earlier one,
/// is dropped; copies that ran apart print different lines and stay.
pub fn whole_beats(beats: &[(u64, &str)]) -> Vec<bool> {
    let mut by_seq: std::collections::HashMap<u64, Vec<usize>> = std::collections::HashMap::new();
    for (i, &(seq, _)) in beats.iter().enumerate() {
        by_seq.entry(seq).or_default().push(i);
    }
    (0..beats.len())
        .map(|i| {
            let (seq, text) = beats[i];
            !by_seq[&seq].iter().any(|&j| {
                let other = beats[j].1;
                j != i && other.starts_with(text) && (other.len() > text.len() || j < i)
            })
        })
        .collect()
}

/// A heartbeat: when it was printed and its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// [`SerialLine::time`] of the heartbeat line.
    pub time: f64,
    /// The guest's sequence number.
    pub seq: u64,
}

/// The heartbeats of a log, in log order.
pub fn heartbeats(lines: &[SerialLine]) -> Vec<Heartbeat> {
    lines
        .iter()
        .filter_map(|l| heartbeat_seq(&l.text).map(|seq| Heartbeat { time: l.time, seq }))
        .collect()
}

/// The largest gap between consecutive heartbeats, and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatGap {
    /// Length of the gap in seconds.
    pub seconds: f64,
    /// The heartbeat before the gap.
    pub before: Heartbeat,
    /// The heartbeat after the gap.
    pub after: Heartbeat,
}

/// Guest-visible downtime: the largest gap between consecutive heartbeats
/// that overlaps `[from, until]`, over the heartbeats of all `logs` together
/// (the source's and the destination's serial log across a switchover),
/// ordered by time. The last heartbeat before `from` counts too, so a
/// switchover shorter than one heartbeat interval is still seen. `None`
/// with fewer than two heartbeats.
///
/// For a migration, `from` is when it started and `until` the time of the
/// first heartbeat the guest printed after it resumed on the destination
/// (a heartbeat printed before the pause can still first appear in the
/// destination's log, since guests buffer their output). Ferry and QEMU
/// runs are measured with this same function, so the numbers compare like
/// for like.
pub fn max_heartbeat_gap(logs: &[&[SerialLine]], from: f64, until: f64) -> Option<HeartbeatGap> {
    let mut beats: Vec<Heartbeat> = logs
        .iter()
        .flat_map(|l| heartbeats(l))
        .filter(|h| h.time <= until)
        .collect();
    beats.sort_by(|a, b| a.time.total_cmp(&b.time).then(a.seq.cmp(&b.seq)));
    let first = beats.iter().rposition(|h| h.time < from).unwrap_or(0);
    beats[first..]
        .windows(2)
        .map(|w| HeartbeatGap {
            seconds: w[1].time - w[0].time,
            before: w[0],
            after: w[1],
        })
        .max_by(|a, b| a.seconds.total_cmp(&b.seconds))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cut_head_or_a_repeat_is_not_a_heartbeat_of_its_own() {
        let beats = [
            (7, "HB seq=7 tsc=10 rate=5"),
            (8, "HB seq=8 tsc=2"), // cut: the whole line follows
            (8, "HB seq=8 tsc=20 rate=5"),
            (8, "HB seq=8 tsc=20 rate=5"), // printed again
            (9, "HB seq=9 tsc=30 rate=5"),
            (9, "HB seq=9 tsc=31 rate=6"), // another copy ran: stays
        ];
        assert_eq!(whole_beats(&beats), [true, false, true, false, true, true]);
    }

    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    fn line(time: f64, text: &str) -> SerialLine {
        SerialLine {
            arrival: time,
            time,
            text: text.to_string(),
        }
    }

    #[test]
    fn heartbeat_parsing() {
        assert_eq!(heartbeat_seq("HB seq=42 tsc=00ff"), Some(42));
        assert_eq!(heartbeat_seq("HB seq=7"), Some(7));
        assert_eq!(heartbeat_seq("HB seq=x"), None);
        assert_eq!(heartbeat_seq("VERIFY ok"), None);
        assert_eq!(heartbeat_seq("xHB seq=1"), None);
    }

    #[test]
    fn capture_splits_lines_and_closes() {
        let (mut w, r) = UnixStream::pair().unwrap();
        let (log, handle) = SerialLog::capture(r, None);
        w.write_all(b"HB seq=0\r\nHB se").unwrap();
        let (i, l) = log
            .wait_for(0, Duration::from_secs(5), is_heartbeat)
            .unwrap();
        assert_eq!((i, l.text.as_str()), (0, "HB seq=0"));
        w.write_all(b"q=1\nVERIFY ok\ntail").unwrap();
        let (i, _) = log
            .wait_for(1, Duration::from_secs(5), |l| l.text.starts_with("VERIFY"))
            .unwrap();
        assert_eq!(i, 2);
        drop(w);
        handle.join().unwrap();
        assert!(log.is_closed());
        let texts: Vec<_> = log.lines().into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["HB seq=0", "HB seq=1", "VERIFY ok", "tail"]);
        // Closed: waiting for something that never comes returns at once.
        assert!(
            log.wait_for(0, Duration::from_secs(60), |_| false)
                .is_none()
        );
    }

    #[test]
    fn stamper_refines_batches() {
        let (mut w, r) = UnixStream::pair().unwrap();
        let stamper: StampFn = Box::new(|batch: &[String], arrival: f64| {
            (0..batch.len())
                .map(|i| arrival - (batch.len() - 1 - i) as f64)
                .collect()
        });
        let (log, handle) = SerialLog::capture(r, Some(stamper));
        w.write_all(b"a\nb\nc\n").unwrap();
        drop(w);
        handle.join().unwrap();
        let lines = log.lines();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].time, lines[2].arrival);
        assert_eq!(lines[0].time, lines[0].arrival - 2.0);
    }

    #[test]
    fn gap_across_two_logs() {
        let src = vec![
            line(1.0, "HB seq=1"),
            line(1.1, "HB seq=2"),
            line(1.2, "HB seq=3"),
            line(1.25, "noise"),
        ];
        let dst = vec![
            line(1.9, "HB seq=4"),
            line(2.0, "HB seq=5"),
            line(9.0, "HB seq=6"),
        ];
        let g = max_heartbeat_gap(&[&src, &dst], 1.05, 3.0).unwrap();
        assert!((g.seconds - 0.7).abs() < 1e-9);
        assert_eq!((g.before.seq, g.after.seq), (3, 4));
        // A window inside one gap still sees that gap.
        let g = max_heartbeat_gap(&[&dst, &src], 1.5, 1.9).unwrap();
        assert_eq!((g.before.seq, g.after.seq), (3, 4));
        // The later, larger gap (2.0 -> 9.0) is outside the window.
        let g = max_heartbeat_gap(&[&src, &dst], 0.0, 2.0).unwrap();
        assert_eq!(g.after.seq, 4);
        assert!(max_heartbeat_gap(&[&src], 1.15, 0.5).is_none());
    }
}
