//! The report as people read it (`Display`): totals, then a table of
//! rounds whose columns follow what the strategy used.

use std::fmt;

use super::{MigrationReport, Outcome, PostcopyReport, VmLocation};

impl MigrationReport {
    /// The downtime target, for people.
    fn target(&self) -> String {
        let d =
            std::time::Duration::try_from_secs_f64(self.max_downtime_ms / 1e3).unwrap_or_default();
        units::format_duration(d)
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

struct Bits(f64);
impl fmt::Display for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&units::format_bits_per_sec(self.0))
    }
}

impl fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "migration {} (strategy {})", self.outcome, self.strategy)?;
        let loc = match self.vm_location {
            VmLocation::Source => "source",
            VmLocation::Destination => "destination",
            VmLocation::Unknown => "unknown (commit in doubt)",
            VmLocation::Nowhere => "nowhere (post-copy interrupted; paused on the source)",
        };
        writeln!(f, "  VM runs on:        {loc}")?;
        writeln!(f, "  total time:        {:.1} ms", self.total_time_ms)?;
        match self.downtime_ms {
            Some(d) if self.downtime_target_missed => writeln!(
                f,
                "  downtime:          {d:.1} ms (engine: pause to resume), ABOVE the {} target",
                self.target()
            )?,
            Some(d) => writeln!(
                f,
                "  downtime:          {d:.1} ms (engine: pause to resume; target {})",
                self.target()
            )?,
            None => writeln!(f, "  downtime:          -")?,
        }
        if let Some(l) = self.limit_reached {
            let what = match self.outcome {
                Outcome::Completed | Outcome::InDoubt(_) => "switchover forced",
                _ => "aborted",
            };
            writeln!(f, "  pre-copy:          {l} reached, {what}")?;
        }
        if let Some(g) = self.guest.guest_downtime_us {
            let res = self.guest.guest_downtime_resolution_us.unwrap_or(0);
            let mut marks = String::new();
            if self.guest.guest_downtime_coarse == Some(true) {
                marks.push_str(", COARSE");
            }
            if self.guest.guest_sampler_realtime == Some(false) {
                marks.push_str(", sampler not real-time");
            }
            if let Some(at) = self.guest.guest_downtime_at_us
                && at != 0
            {
                marks.push_str(&format!(
                    ", began {:.1} ms {} the pause",
                    at.unsigned_abs() as f64 / 1e3,
                    if at < 0 { "before" } else { "after" }
                ));
            }
            writeln!(
                f,
                "  guest downtime:    {:.3} ms (no progress seen; resolution {:.3} ms{marks})",
                g as f64 / 1e3,
                res as f64 / 1e3
            )?;
        }
        if let Some(g) = self.guest.guest_switchover_us {
            writeln!(
                f,
                "  guest switchover:  {:.3} ms (source's last progress to destination's first)",
                g as f64 / 1e3
            )?;
        }
        if let Some(g) = self.guest.guest_tsc_gap_us {
            writeln!(
                f,
                "  guest TSC gap:     {:.3} ms (the guest's own clock)",
                g as f64 / 1e3
            )?;
        }
        if let Some(g) = self.heartbeat_gap_ms {
            writeln!(f, "  heartbeat gap:     {g:.1} ms (largest, serial logs)")?;
        }
        writeln!(
            f,
            "  bytes sent:        {:.1} MiB for {:.1} MiB of memory ({:.2}x)",
            mib(self.bytes_sent),
            mib(self.memory_bytes),
            self.bytes_ratio
        )?;
        writeln!(
            f,
            "  pages:             {} sent, {} resent, {} zero",
            self.pages_sent, self.pages_resent, self.zero_pages
        )?;
        if let Some(b) = self.max_bandwidth_bps {
            writeln!(
                f,
                "  bandwidth cap:     {} while the guest runs",
                Bits(b as f64)
            )?;
        }
        if let Some(b) = self.link_bandwidth_bps {
            writeln!(f, "  emulated link:     {}", Bits(b as f64))?;
        }
        if let Some(p) = &self.postcopy {
            write_postcopy(f, p)?;
        }
        if self.leased_commit {
            writeln!(f, "  commit:            under the lease")?;
        }
        writeln!(f, "  rounds:            {}", self.rounds)?;
        if !self.per_round.is_empty() {
            let predicts = self
                .per_round
                .iter()
                .any(|r| r.pages_predicted_hot.is_some());
            let throttles = self.per_round.iter().any(|r| r.throttle_pct > 0.0);
            write!(
                f,
                "  {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>16} {:>16}",
                "round",
                "pending",
                "dirtied",
                "sent",
                "skipped",
                "held",
                "zero",
                "MiB",
                "ms",
                "rate",
                "dirty rate"
            )?;
            if predicts {
                write!(f, " {:>9} {:>9} {:>9}", "hot", "precision", "recall")?;
            }
            if throttles {
                write!(f, " {:>9}", "throttle")?;
            }
            writeln!(f)?;
            for r in &self.per_round {
                write!(
                    f,
                    "  {:>4}{} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10.2} {:>9.1} {:>16} {:>16}",
                    r.round,
                    if r.interrupted {
                        "!"
                    } else if r.stop_and_copy {
                        "*"
                    } else {
                        " "
                    },
                    r.pages_pending,
                    r.pages_dirtied,
                    r.pages_sent,
                    r.pages_skipped,
                    r.pages_held_back,
                    r.zero_pages,
                    mib(r.bytes),
                    r.duration_ms,
                    Bits(r.transfer_rate_bps).to_string(),
                    Bits(r.dirty_rate_bps).to_string()
                )?;
                if predicts {
                    let pct =
                        |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.1}%", v * 100.0));
                    let hot = r.pages_predicted_hot.map_or("-".into(), |h| h.to_string());
                    write!(
                        f,
                        " {:>9} {:>9} {:>9}",
                        hot,
                        pct(r.prediction_precision),
                        pct(r.prediction_recall)
                    )?;
                }
                if throttles {
                    write!(f, " {:>8.0}%", r.throttle_pct)?;
                }
                writeln!(f)?;
            }
            writeln!(
                f,
                "  (* = stop-and-copy round, VM paused; ! = interrupted by the failure)"
            )?;
        }
        Ok(())
    }
}

fn write_postcopy(f: &mut fmt::Formatter<'_>, p: &PostcopyReport) -> fmt::Result {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3} ms"));
    writeln!(
        f,
        "  post-copy:         {} pages to fetch ({}), {:.1} ms, {:.1} MiB",
        p.pages_to_fetch,
        p.trigger,
        p.duration_ms,
        mib(p.bytes_sent)
    )?;
    writeln!(
        f,
        "    pages:           {} requested in {} requests, {} pushed, {} zero",
        p.pages_requested, p.requests, p.pages_pushed, p.zero_pages
    )?;
    writeln!(
        f,
        "    faults:          {} waited on; p50 {}, p99 {}",
        p.faults,
        ms(p.fault_p50_ms),
        ms(p.fault_p99_ms)
    )
}
