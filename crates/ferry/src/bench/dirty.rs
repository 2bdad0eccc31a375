//! `ferry bench dirty-rate`: how fast the dirtier writes with dirty logging
//! off and on (the write-protect faults a migration causes).

use std::time::{Duration, Instant};

use anyhow::Context;
use yardstick::bench::{median, ratio};
use yardstick::table::Table;

use super::warm_dirtier;
use node::Instance;

/// Write rate over `seconds`, optionally re-arming dirty tracking every 100 ms as a migration does.
fn measure_rate(host: &Instance, seconds: f64, log_dirty: bool) -> anyhow::Result<f64> {
    let vm = host.vm().context("the dirtier has no VM")?;
    let regions = vm.config().regions.len();
    let mut bitmaps = vec![Vec::new(); regions];
    if log_dirty {
        vm.start_dirty_log()?;
        vm.harvest_dirty(&mut bitmaps)?;
    }
    let before = host
        .guest_counters()
        .context("no guest counters")?
        .pages_written;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        std::thread::sleep(Duration::from_millis(100));
        if log_dirty {
            vm.harvest_dirty(&mut bitmaps)?;
        }
    }
    let after = host
        .guest_counters()
        .context("no guest counters")?
        .pages_written;
    let elapsed = start.elapsed().as_secs_f64();
    if log_dirty {
        vm.stop_dirty_log()?;
    }
    Ok((after - before) as f64 / elapsed)
}

pub fn run(reps: usize, duration: Duration, json: bool) -> anyhow::Result<()> {
    let seconds = duration.as_secs_f64();
    let mut doc = Vec::new();
    let mut t = Table::new([
        "pattern",
        "logging off (pages/s)",
        "logging on (pages/s)",
        "on/off",
    ]);
    for pattern in ["seq", "random"] {
        let host = warm_dirtier(512 << 20, 64 << 20, pattern)?;
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for i in 0..reps {
            tracing::info!("dirty-rate: {pattern} run {}/{reps}", i + 1);
            off.push(measure_rate(&host, seconds, false)?);
            on.push(measure_rate(&host, seconds, true)?);
        }
        let (a, b) = (median(&off).unwrap_or(0.0), median(&on).unwrap_or(0.0));
        doc.push(serde_json::json!({
            "pattern": pattern,
            "logging_off_pages_per_s": { "median": a, "samples": off },
            "logging_on_pages_per_s": { "median": b, "samples": on },
        }));
        t.row([
            pattern.to_string(),
            format!("{a:.0}"),
            format!("{b:.0}"),
            ratio(b, a),
        ]);
    }
    let caption = format!(
        "Dirtier write rate (64 MiB working set, unpaced), median of {reps} runs of {}; with logging on, the log is harvested and re-armed every 100 ms.",
        units::format_duration(duration)
    );
    let doc = serde_json::json!({ "reps": reps, "duration_ms": seconds * 1e3, "patterns": doc });
    super::print(&caption, &t, json.then_some(doc))
}
