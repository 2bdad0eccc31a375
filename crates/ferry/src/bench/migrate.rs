//! `ferry bench migrate`: every workload x system x bandwidth, repeated;
//! each Ferry run between two `ferry` processes, each QEMU run between two
//! QEMUs, from the same start point with the same parameters.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::plan::{BenchBandwidth, MigrateBenchArgs, MigratePlan, plan};
use super::record::{FerryRun, KvLatency, QemuRun, RunRecord, now_utc, runs_json, write_json};
use super::report::{migrate_tables, plots};
use super::workload::Workload;
use crate::pair::{GuestSpec, Pair};
use api::types::MigrateRequest;

pub fn run(a: &MigrateBenchArgs) -> anyhow::Result<()> {
    let p = plan(a)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create --out {}", a.out.display()))?;
    if !a.no_qemu && !p.qemu {
        tracing::warn!("bench migrate: qemu-system-x86_64 is not installed; Ferry only");
    }
    let systems = p.systems();
    let total = p.reps * p.bandwidths.len() * p.workloads.len() * systems.len();
    let started_at = now_utc();
    let mut records: Vec<RunRecord> = Vec::new();
    let mut n = 0;
    // Repetitions outermost, so slow drifts of the machine's load hit every
    // configuration alike.
    for rep in 0..p.reps {
        for bw in &p.bandwidths {
            for w in &p.workloads {
                for sys in &systems {
                    n += 1;
                    eprint!(
                        "bench migrate: run {n}/{total}: {} {sys} {} rep {}/{} ... ",
                        w.name,
                        bw.label,
                        rep + 1,
                        p.reps
                    );
                    let dir = a.out.join("runs").join(format!(
                        "{n:03}-{}-{sys}-{}",
                        w.name,
                        bw.label.replace('/', "_")
                    ));
                    let rec = measure(&dir, rep, w, sys, bw, &p);
                    tracing::info!("{}", rec.summary());
                    records.push(rec);
                    write_json(&a.out, &p, &started_at, &records)?;
                }
            }
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs_json(&p, &started_at, &records))?
        );
    } else {
        println!("{}", migrate_tables(&p, &records, &systems));
    }
    plots(&a.out, &p, &records, &systems)?;
    tracing::info!(
        "bench migrate: raw runs in {}, plots in {}",
        a.out.join("runs.json").display(),
        a.out.display()
    );
    Ok(())
}

/// One repetition of one cell; a Ferry run keeps its logs in `dir` if it failed.
fn measure(
    dir: &Path,
    rep: usize,
    w: &Workload,
    sys: &str,
    bw: &BenchBandwidth,
    p: &MigratePlan,
) -> RunRecord {
    let mut rec = RunRecord::new(w.name, sys, &bw.label, rep, p.memory);
    if super::plan::is_qemu(sys) {
        rec.set_qemu(qemu_run(w, bw, p, sys), p.qemu_timeout);
    } else {
        let run = ferry_run(dir, w, sys, bw, p);
        rec.kvstore = run.as_ref().ok().and_then(|r| r.1);
        rec.set_ferry(run.map(|r| r.0));
    }
    // Keep the logs of failed Ferry runs only.
    if rec.ok {
        let _ = std::fs::remove_dir_all(dir);
    }
    rec
}

/// One Ferry migration in `dir`: boot, wait for the start point, migrate.
fn ferry_run(
    dir: &Path,
    w: &Workload,
    strategy: &str,
    bw: &BenchBandwidth,
    p: &MigratePlan,
) -> anyhow::Result<(FerryRun, Option<KvLatency>)> {
    let mut pair = Pair::start(
        dir,
        &GuestSpec {
            guest: w.guest.into(),
            memory: units::ByteSize(p.memory),
            vcpus: w.vcpus,
            append: w.append.into(),
        },
    )?;
    pair.wait_line_after(&pair.src_log, 0.0, w.ready, Duration::from_secs(60))?;
    std::thread::sleep(w.fill() + p.warmup);
    // The API answers with the guest's counters: the source is serving.
    pair.wait_source("the source's control API", |_| true)?;
    let req = MigrateRequest {
        strategy: Some(strategy.into()),
        max_bandwidth_bps: bw.cap.map(units::Bandwidth::bits_per_sec),
        max_downtime_ms: Some(p.max_downtime.as_secs_f64() * 1e3),
        sync_interval_ms: p.sync_interval.map(|d| d.as_millis() as u64),
        ..MigrateRequest::default()
    };
    let t0 = crate::serial::now();
    let (report, error) = pair.migrate(req, false)?;
    let t1 = crate::serial::now();
    let verify = if p.verify && error.is_none() {
        Some(second_verify(|after| {
            pair.wait_line_after(&pair.dst_log, after, "VERIFY", VERIFY_TIMEOUT)
                .map(|l| (l, after_line_time(&pair.dst_log, after)))
        })?)
    } else {
        None
    };
    let kv = if w.guest == "kvstore" {
        // The destination's lines in the second after the end.
        std::thread::sleep(Duration::from_millis(1200));
        KvLatency::from_logs(&pair.src_log, &pair.dst_log, t0, t1)
    } else {
        None
    };
    pair.shutdown();
    Ok(((report, error, verify), kv))
}

/// How long to wait for each verification line on the destination.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// Host time of the first `VERIFY` line at or after `after` in a stamped log.
fn after_line_time(log: &Path, after: f64) -> f64 {
    crate::serial::read_stamped_log(log)
        .ok()
        .and_then(|lines| {
            lines
                .iter()
                .find(|l| l.time >= after && l.text.starts_with("VERIFY"))
                .map(|l| l.time)
        })
        .unwrap_or(after)
}

/// The second `VERIFY` line after now: the first may have read part of the
/// memory on the source; the second is a whole round on the destination.
/// `next(after)` returns the first such line at or after `after` and its time.
fn second_verify(
    mut next: impl FnMut(f64) -> anyhow::Result<(String, f64)>,
) -> anyhow::Result<String> {
    let (_, t) = next(crate::serial::now())?;
    Ok(next(t + 1e-6)?.0)
}

/// One QEMU migration of the same guest, start point and parameters.
fn qemu_run(
    w: &Workload,
    bw: &BenchBandwidth,
    p: &MigratePlan,
    system: &str,
) -> anyhow::Result<QemuRun> {
    let mut setup = yardstick::guests::guest_config(w.guest, w.append)?;
    setup.config.memory_mib = p.memory >> 20;
    setup.config.vcpus = w.vcpus;
    let params = yardstick::MigrationParams {
        max_bandwidth: bw.cap,
        downtime_limit_ms: p.max_downtime.as_millis() as u64,
        timeout: p.qemu_timeout,
        postcopy: system == super::plan::QEMU_POSTCOPY,
        capabilities: if system == super::plan::QEMU_AUTO_CONVERGE {
            vec!["auto-converge".into()]
        } else {
            Vec::new()
        },
        sample_guest: true,
        ..Default::default()
    };
    let ready = w.ready;
    let mut run = yardstick::migrate_guest_after(
        &setup.config,
        &params,
        &format!("a {ready:?} line"),
        |l| l.text.starts_with(ready),
        w.fill() + p.warmup,
    )?;
    let verify = if p.verify && run.report.outcome == yardstick::QemuOutcome::Completed {
        let dst = &mut run.destination;
        Some(second_verify(|after| {
            let (_, l) = dst.wait_for_line(0, VERIFY_TIMEOUT, "a VERIFY line", |l| {
                l.text.starts_with("VERIFY") && l.time >= after
            })?;
            Ok((l.text, l.time))
        })?)
    } else {
        None
    };
    Ok((run.report, verify))
}
