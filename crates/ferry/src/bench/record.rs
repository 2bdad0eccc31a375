//! One measured migration as `ferry bench migrate` keeps it, and runs.json.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use migrate::MigrationReport;
use yardstick::{QemuMigration, QemuOutcome};

use super::plan::MigratePlan;

/// One measured migration, Ferry's or QEMU's, as written to runs.json.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    pub workload: String,
    /// A Ferry strategy, or `qemu`.
    pub system: String,
    pub bandwidth: String,
    pub rep: usize,
    pub memory_bytes: u64,
    /// Completed with the VM on the destination.
    pub ok: bool,
    pub error: Option<String>,
    pub ferry: Option<migrate::MigrationReport>,
    pub qemu: Option<yardstick::QemuMigration>,
    /// With `--verify`: the destination's verification line.
    pub verify: Option<String>,
    /// kvstore's p99 request latency before and during the migration
    /// (Ferry runs of the kvstore workload).
    pub kvstore: Option<KvLatency>,
}

/// kvstore's own p99 latency (its `KV` lines, one per second) before the
/// migration and while it ran.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct KvLatency {
    /// Median of the source's lines in the 5 s before the migration, ms.
    pub before_p99_ms: f64,
    /// Worst line of either side from the start of the migration to 1 s
    /// after its end, ms.
    pub during_p99_ms: f64,
}

impl KvLatency {
    /// From both sides' stamped logs, for a migration from `t0` to `t1`
    /// (host seconds); `None` without lines on both sides of `t0`.
    pub fn from_logs(src: &Path, dst: &Path, t0: f64, t1: f64) -> Option<KvLatency> {
        let kv = |path: &Path| -> Vec<(f64, f64)> {
            crate::serial::read_stamped_log(path)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|l| match guest::output::parse_line(&l.text) {
                    guest::output::Line::Kv { p99_ns, .. } => Some((l.time, p99_ns as f64 / 1e6)),
                    _ => None,
                })
                .collect()
        };
        let (s, d) = (kv(src), kv(dst));
        let before: Vec<f64> = s
            .iter()
            .filter(|(t, _)| *t >= t0 - 5.0 && *t < t0)
            .map(|p| p.1)
            .collect();
        let during = s
            .iter()
            .chain(&d)
            .filter(|(t, _)| *t >= t0 && *t <= t1 + 1.0)
            .map(|p| p.1)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        Some(KvLatency {
            before_p99_ms: yardstick::bench::median(&before)?,
            during_p99_ms: during?,
        })
    }
}

/// The numbers compared between Ferry and QEMU.
#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    pub total_ms: f64,
    pub downtime_ms: Option<f64>,
    /// Sampled from the guest's pass counters (ms, to the microsecond).
    pub guest_downtime_ms: Option<f64>,
    /// The sampler's resolution (ms) and whether it ran at real-time priority.
    pub resolution_ms: Option<f64>,
    pub realtime: Option<bool>,
    /// The switchover alone (source's last progress to destination's first).
    pub switchover_ms: Option<f64>,
    /// Largest heartbeat gap in the serial logs.
    pub heartbeat_gap_ms: Option<f64>,
    /// The guest's own largest TSC gap (Ferry only: QEMU restores the TSC).
    pub tsc_gap_ms: Option<f64>,
    pub bytes: f64,
    pub bytes_ratio: f64,
    pub rounds: f64,
    /// Wire rate of the first (bulk) round, bytes/s (Ferry only).
    pub round1_bytes_per_s: Option<f64>,
    /// After a switch to post-copy (Ferry only).
    pub postcopy: Option<PostcopyMetrics>,
}

/// Post-copy's numbers of one Ferry run.
#[derive(Debug, Clone, Copy)]
pub struct PostcopyMetrics {
    pub fault_p50_ms: Option<f64>,
    pub fault_p99_ms: Option<f64>,
    pub pages_requested: f64,
    pub pages_pushed: f64,
    /// VM resumed on the destination to every page there.
    pub duration_ms: f64,
    /// Bytes destination -> source (requests and replies).
    pub bytes_back: f64,
}

impl RunRecord {
    pub fn metrics(&self) -> Option<Metrics> {
        if !self.ok {
            return None;
        }
        if let Some(r) = &self.ferry {
            let r1 = r
                .per_round
                .first()
                .filter(|r| r.duration_ms > 0.0 && !r.stop_and_copy)
                .map(|r| r.bytes as f64 / (r.duration_ms / 1e3));
            return Some(Metrics {
                total_ms: r.total_time_ms,
                downtime_ms: r.downtime_ms,
                guest_downtime_ms: us_to_ms(r.guest.guest_downtime_us),
                resolution_ms: us_to_ms(r.guest.guest_downtime_resolution_us),
                realtime: r.guest.guest_sampler_realtime,
                switchover_ms: us_to_ms(r.guest.guest_switchover_us),
                heartbeat_gap_ms: r.heartbeat_gap_ms,
                tsc_gap_ms: us_to_ms(r.guest.guest_tsc_gap_us),
                bytes: r.bytes_sent as f64,
                bytes_ratio: r.bytes_ratio,
                rounds: r.rounds as f64,
                round1_bytes_per_s: r1,
                postcopy: r.postcopy.as_ref().map(|p| PostcopyMetrics {
                    fault_p50_ms: p.fault_p50_ms,
                    fault_p99_ms: p.fault_p99_ms,
                    pages_requested: p.pages_requested as f64,
                    pages_pushed: p.pages_pushed as f64,
                    duration_ms: p.duration_ms,
                    bytes_back: r.bytes_received as f64,
                }),
            });
        }
        self.qemu.as_ref().map(|q| Metrics {
            total_ms: q.total_time_ms,
            downtime_ms: Some(q.downtime_ms),
            guest_downtime_ms: us_to_ms(q.guest.guest_downtime_us),
            resolution_ms: us_to_ms(q.guest.guest_downtime_resolution_us),
            realtime: q.guest.guest_sampler_realtime,
            switchover_ms: us_to_ms(q.guest.guest_switchover_us),
            heartbeat_gap_ms: q.heartbeat_gap_ms,
            tsc_gap_ms: us_to_ms(q.guest.guest_tsc_gap_us),
            bytes: q.bytes_sent as f64,
            bytes_ratio: q.bytes_per_memory,
            rounds: q.rounds as f64,
            round1_bytes_per_s: None,
            postcopy: None,
        })
    }
}

fn us_to_ms(us: Option<u64>) -> Option<f64> {
    us.map(|v| v as f64 / 1e3)
}

/// What a Ferry run returns: the report, the migration's error, and the
/// destination's verification line (with `--verify`).
pub type FerryRun = (MigrationReport, Option<String>, Option<String>);

/// What a QEMU run returns: the measurement and the verification line.
pub type QemuRun = (QemuMigration, Option<String>);

impl RunRecord {
    /// A run not yet measured (failed until told otherwise).
    pub fn new(workload: &str, system: &str, bandwidth: &str, rep: usize, memory: u64) -> Self {
        RunRecord {
            workload: workload.into(),
            system: system.into(),
            bandwidth: bandwidth.into(),
            rep,
            memory_bytes: memory,
            ok: false,
            error: None,
            ferry: None,
            qemu: None,
            verify: None,
            kvstore: None,
        }
    }

    /// Records a Ferry run's result.
    pub fn set_ferry(&mut self, run: anyhow::Result<FerryRun>) {
        match run {
            Ok((r, err, verify)) => {
                self.verify = verify;
                self.ok = err.is_none() && r.outcome == migrate::Outcome::Completed;
                self.error = err.or_else(|| (!self.ok).then(|| r.outcome.to_string()));
                self.ferry = Some(r);
            }
            Err(e) => self.error = Some(format!("{e:#}")),
        }
        self.check_verify();
    }

    /// Records a QEMU run's result; `timeout` is when QEMU was cancelled.
    pub fn set_qemu(&mut self, run: anyhow::Result<QemuRun>, timeout: Duration) {
        match run {
            Ok((q, verify)) => {
                self.verify = verify;
                self.ok = q.outcome == QemuOutcome::Completed;
                if !self.ok {
                    self.error = Some(match q.outcome {
                        QemuOutcome::TimedOut => format!("did not converge within {timeout:?}"),
                        o => format!("{o:?}: {}", q.error.clone().unwrap_or_default()),
                    });
                }
                self.qemu = Some(q);
            }
            Err(e) => self.error = Some(format!("{e:#}")),
        }
        self.check_verify();
    }

    /// A run whose guest failed its check on the destination failed.
    fn check_verify(&mut self) {
        if let Some(v) = &self.verify
            && !v.starts_with("VERIFY ok")
        {
            self.ok = false;
            self.error = Some(format!("integrity check on the destination: {v}"));
        }
    }

    /// One line for the progress output.
    pub fn summary(&self) -> String {
        match (self.metrics(), &self.error) {
            (Some(m), _) => format!(
                "{:.0} ms, downtime {}, guest {} (resolution {}), heartbeat gap {}, {}",
                m.total_ms,
                opt_ms(m.downtime_ms),
                opt_ms(m.guest_downtime_ms),
                opt_ms(m.resolution_ms),
                opt_ms(m.heartbeat_gap_ms),
                units::format_bytes(m.bytes as u64)
            ),
            (None, e) => format!("FAILED: {}", e.as_deref().unwrap_or("?")),
        }
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3} ms"))
}

/// The start time of the benchmark as runs.json gives it.
pub fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Writes `out/runs.json`: the plan and every run so far.
pub fn write_json(
    out: &Path,
    p: &MigratePlan,
    started: &str,
    records: &[RunRecord],
) -> anyhow::Result<()> {
    let doc = runs_json(p, started, records);
    let path = out.join("runs.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// runs.json's document: the plan and every run so far.
pub fn runs_json(p: &MigratePlan, started: &str, records: &[RunRecord]) -> serde_json::Value {
    serde_json::json!({
        "started": started,
        "memory_bytes": p.memory,
        "max_downtime_ms": p.max_downtime.as_millis() as u64,
        "warmup_ms": p.warmup.as_millis() as u64,
        "qemu_timeout_ms": p.qemu_timeout.as_millis() as u64,
        "verify": p.verify,
        "sync_interval_ms": p.sync_interval.map(|d| d.as_millis() as u64),
        "workloads": p.workloads,
        "runs": records,
    })
}

/// A Ferry record with these numbers (for tests).
#[cfg(test)]
pub fn ferry_record(rep: usize, ok: bool, total: f64, bytes: u64) -> RunRecord {
    let r: MigrationReport = serde_json::from_value(serde_json::json!({
        "strategy": "downtime", "outcome": if ok { "completed" } else { "failed: boom" },
        "vm_location": "destination", "total_time_ms": total, "downtime_ms": 10.0,
        "heartbeat_gap_ms": 20.0, "guest_downtime_us": 15_000u64,
        "guest_downtime_resolution_us": 40u64, "guest_sampler_realtime": true,
        "bytes_sent": bytes, "memory_bytes": 1000u64,
        "bytes_ratio": bytes as f64 / 1000.0, "rounds": 2, "pages_resent": 0,
        "pages_sent": 0, "zero_pages": 0, "max_bandwidth_bps": null,
        "max_downtime_ms": 300.0, "pause_ms": null, "per_round": []
    }))
    .unwrap();
    let mut rec = RunRecord::new("idle", "downtime", "unlimited", rep, 1000);
    rec.set_ferry(Ok((r, (!ok).then(|| "boom".to_string()), None)));
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvstore_latency_before_and_during_from_both_logs() {
        let dir = std::env::temp_dir().join(format!("ferry-kv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kv =
            |t: f64, p99: u64| format!("[{t}] KV ops=1 ops_s=1 p50_ns=1 p99_ns={p99} p999_ns=1\n");
        let src = dir.join("src.log");
        let dst = dir.join("dst.log");
        let s: String = [
            kv(90.0, 9_000_000),
            kv(96.0, 1_000_000),
            kv(97.0, 3_000_000),
        ]
        .concat()
            + &kv(98.0, 2_000_000)
            + &kv(100.5, 5_000_000);
        std::fs::write(&src, s).unwrap();
        std::fs::write(&dst, kv(101.5, 7_000_000) + &kv(103.0, 99_000_000)).unwrap();
        let k = KvLatency::from_logs(&src, &dst, 100.0, 101.0).unwrap();
        assert_eq!((k.before_p99_ms, k.during_p99_ms), (2.0, 7.0));
        assert!(KvLatency::from_logs(&src, &dst, 200.0, 201.0).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_check_on_the_destination_fails_the_run() {
        let mut rec = ferry_record(0, true, 100.0, 500);
        assert!(rec.ok && rec.metrics().is_some());
        let report = rec.ferry.clone().unwrap();
        rec.set_ferry(Ok((report, None, Some("VERIFY FAIL page=3".into()))));
        assert!(!rec.ok && rec.metrics().is_none());
        assert!(
            rec.summary().contains("integrity check"),
            "{}",
            rec.summary()
        );
    }
}
