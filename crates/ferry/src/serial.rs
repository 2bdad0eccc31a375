//! Stamped serial logs read back (`node::serial` writes them): their
//! clock, and the largest heartbeat gap across a migration.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Host wall time in UNIX seconds, the clock of the stamped logs.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
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
/// `until` (UNIX seconds), in ms (the heartbeat spacing bounds its
/// resolution; `guest::sampler` measures the downtime itself).
pub fn heartbeat_gap_ms(
    src: &Path,
    dst: &Path,
    from: f64,
    until: f64,
) -> anyhow::Result<Option<f64>> {
    let (a, b) = (read_stamped_log(src)?, read_stamped_log(dst)?);
    Ok(yardstick::serial::max_heartbeat_gap(&[&a, &b], from, until).map(|g| g.seconds * 1e3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("ferry-serial-{}-{name}", std::process::id()))
    }

    #[test]
    fn stamped_lines_are_placed_by_their_tsc() {
        let path = tmp("stamped.log");
        let config = node::serial::SerialConfig {
            path: Some(path.clone()),
            timestamps: true,
            append: false,
        };
        let mut s = config.sink(1_000_000).unwrap(); // 1 GHz TSC
        let at = UNIX_EPOCH + Duration::from_secs(100);
        s(b"HB seq=1 tsc=1000000000 rate=0\nVERIFY ok pages=1 gen=1\nHB seq=2 tsc=1500000000 rate=0\n", at);
        drop(s);
        let lines = read_stamped_log(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(lines.len(), 3);
        // The last heartbeat arrived at 100 s; the first was printed 0.5 s before.
        assert!((lines[0].time - 99.5).abs() < 1e-6, "{}", lines[0].time);
        assert!((lines[1].time - 100.0).abs() < 1e-6);
        assert!((lines[2].time - 100.0).abs() < 1e-6);
        assert_eq!(lines[1].text, "VERIFY ok pages=1 gen=1");
    }

    #[test]
    fn bytes_reach_the_log_as_written_and_stamps_wait_for_the_newline() {
        let (plain, stamped) = (tmp("plain.log"), tmp("stamped-partial.log"));
        let sink = |path: &std::path::PathBuf, timestamps| {
            node::serial::SerialConfig {
                path: Some(path.clone()),
                timestamps,
                append: false,
            }
            .sink(1_000_000)
            .unwrap()
        };
        let mut s = sink(&plain, false);
        s(b"login: ", SystemTime::now());
        // A prompt without a newline is in the file at once.
        assert_eq!(std::fs::read(&plain).unwrap(), b"login: ");
        let mut s = sink(&stamped, true);
        let at = UNIX_EPOCH + Duration::from_secs(7);
        for b in b"VERIFY ok" {
            s(std::slice::from_ref(b), at);
        }
        assert!(read_stamped_log(&stamped).unwrap().is_empty());
        s(b" pages=1 gen=1\n", at);
        let lines = read_stamped_log(&stamped).unwrap();
        std::fs::remove_file(&plain).unwrap();
        std::fs::remove_file(&stamped).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text, "VERIFY ok pages=1 gen=1");
        assert!((lines[0].time - 7.0).abs() < 1e-6);
    }

    #[test]
    fn heartbeat_gap_is_the_gap_across_both_logs() {
        let (a, b) = (tmp("a.log"), tmp("b.log"));
        std::fs::write(
            &a,
            "[10.000] HB seq=1 tsc=1\n[10.010] HB seq=2 tsc=2\nnot stamped\n",
        )
        .unwrap();
        std::fs::write(&b, "[10.210] HB seq=3 tsc=3\n[10.220] HB seq=4 tsc=4\n").unwrap();
        let d = heartbeat_gap_ms(&a, &b, 10.005, 11.0).unwrap().unwrap();
        std::fs::remove_file(&a).unwrap();
        std::fs::remove_file(&b).unwrap();
        assert!((d - 200.0).abs() < 1e-6, "{d}");
    }
}
