//! `ferry bench migrate`'s results: medians per cell, Markdown tables for
//! docs/BENCHMARKS.md, and grouped bar plots.

use std::path::Path;

use yardstick::bench::{median, ratio};
use yardstick::plot::Series;
use yardstick::table::Table;

use super::plan::{
    BenchBandwidth, MigratePlan, QEMU, QEMU_AUTO_CONVERGE, QEMU_POSTCOPY, is_qemu, qemu_peer,
};
use super::record::{Metrics, RunRecord};

/// Medians over the successful runs of one cell, and how many succeeded.
struct Cell {
    ok: usize,
    runs: usize,
    total_ms: Option<f64>,
    downtime_ms: Option<f64>,
    guest_downtime_ms: Option<f64>,
    /// Successful runs whose sampler resolution was worse than 1 ms, or
    /// whose sampler was refused real-time priority.
    coarse: usize,
    not_realtime: usize,
    switchover_ms: Option<f64>,
    heartbeat_gap_ms: Option<f64>,
    tsc_gap_ms: Option<f64>,
    bytes: Option<f64>,
    bytes_ratio: Option<f64>,
    rounds: Option<f64>,
    round1: Option<f64>,
    /// Post-copy: fault wait p50 and p99, pages requested and pushed, time
    /// in post-copy, bytes back from the destination.
    fault_p50: Option<f64>,
    fault_p99: Option<f64>,
    requested: Option<f64>,
    pushed: Option<f64>,
    postcopy_ms: Option<f64>,
    bytes_back: Option<f64>,
    /// kvstore's p99 latency before and during the migration, ms.
    kv_before: Option<f64>,
    kv_during: Option<f64>,
    first_error: Option<String>,
}

impl Cell {
    fn of(records: &[RunRecord], workload: &str, system: &str, bw: &str) -> Cell {
        let runs: Vec<&RunRecord> = records
            .iter()
            .filter(|r| r.workload == workload && r.system == system && r.bandwidth == bw)
            .collect();
        let m: Vec<Metrics> = runs.iter().filter_map(|r| r.metrics()).collect();
        let med = |f: &dyn Fn(&Metrics) -> Option<f64>| {
            let v: Vec<f64> = m.iter().filter_map(f).collect();
            median(&v)
        };
        Cell {
            ok: m.len(),
            runs: runs.len(),
            total_ms: med(&|m| Some(m.total_ms)),
            downtime_ms: med(&|m| m.downtime_ms),
            guest_downtime_ms: med(&|m| m.guest_downtime_ms),
            coarse: m
                .iter()
                .filter(|m| m.resolution_ms.is_some_and(|r| r > 1.0))
                .count(),
            not_realtime: m.iter().filter(|m| m.realtime == Some(false)).count(),
            switchover_ms: med(&|m| m.switchover_ms),
            heartbeat_gap_ms: med(&|m| m.heartbeat_gap_ms),
            tsc_gap_ms: med(&|m| m.tsc_gap_ms),
            bytes: med(&|m| Some(m.bytes)),
            bytes_ratio: med(&|m| Some(m.bytes_ratio)),
            rounds: med(&|m| Some(m.rounds)),
            round1: med(&|m| m.round1_bytes_per_s),
            fault_p50: med(&|m| m.postcopy.and_then(|p| p.fault_p50_ms)),
            fault_p99: med(&|m| m.postcopy.and_then(|p| p.fault_p99_ms)),
            requested: med(&|m| m.postcopy.map(|p| p.pages_requested)),
            pushed: med(&|m| m.postcopy.map(|p| p.pages_pushed)),
            postcopy_ms: med(&|m| m.postcopy.map(|p| p.duration_ms)),
            bytes_back: med(&|m| m.postcopy.map(|p| p.bytes_back)),
            kv_before: median(
                &runs
                    .iter()
                    .filter(|r| r.ok)
                    .filter_map(|r| r.kvstore.map(|k| k.before_p99_ms))
                    .collect::<Vec<_>>(),
            ),
            kv_during: median(
                &runs
                    .iter()
                    .filter(|r| r.ok)
                    .filter_map(|r| r.kvstore.map(|k| k.during_p99_ms))
                    .collect::<Vec<_>>(),
            ),
            first_error: runs.iter().find_map(|r| r.error.clone()),
        }
    }

    /// `completed/all`.
    fn ok_text(&self) -> String {
        format!("{}/{}", self.ok, self.runs)
    }

    /// The sampled guest downtime, with how many runs were coarse.
    fn guest_downtime_text(&self) -> String {
        let mut t = fmt_opt(self.guest_downtime_ms, 3);
        if self.coarse > 0 {
            t.push_str(&format!(" ({} coarse)", self.coarse));
        }
        if self.not_realtime > 0 {
            t.push_str(&format!(" ({} not RT)", self.not_realtime));
        }
        t
    }

    /// Bytes on the wire and their ratio to guest memory.
    fn bytes_text(&self) -> String {
        match (self.bytes, self.bytes_ratio) {
            (Some(b), Some(r)) => format!("{} ({r:.2}x)", units::format_bytes(b.round() as u64)),
            _ => "-".into(),
        }
    }
}

fn fmt_opt(v: Option<f64>, p: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.p$}"))
}

fn ratio_opt(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => ratio(a, b),
        _ => "-".into(),
    }
}

const FERRY_COLUMNS: [&str; 12] = [
    "workload",
    "strategy",
    "ok",
    "total ms",
    "downtime ms",
    "guest downtime ms",
    "switchover ms",
    "heartbeat gap ms",
    "guest TSC gap ms",
    "bytes (x memory)",
    "rounds",
    "round-1 GB/s",
];

const QEMU_COLUMNS: [&str; 12] = [
    "QEMU ok",
    "QEMU total ms",
    "QEMU downtime ms",
    "QEMU guest downtime ms",
    "QEMU switchover ms",
    "QEMU heartbeat gap ms",
    "QEMU bytes (x memory)",
    "QEMU rounds",
    "total F/Q",
    "downtime F/Q",
    "guest downtime F/Q",
    "bytes F/Q",
];

/// What the downtime columns mean, under each table.
const COLUMN_NOTE: &str = "`downtime` = the engine's (Ferry: pause to resume) or QEMU's own; `guest downtime` = the longest time the guest made no progress on either side, sampled from its pass counters on both hosts (docs/MIGRATION.md), `(N coarse)` = N runs whose sampler missed more than 1 ms somewhere in the window (1 s before the source's pause to 1 s after the destination's resume); `switchover` = the part of it from the source guest's last progress to the destination guest's first (guest downtime is longer when the guest also stalled elsewhere in the window, e.g. descheduled on a busy host); `heartbeat gap` = the largest gap between heartbeat lines in the serial logs; `guest TSC gap` = the guest's own largest gap between two loop passes (Ferry: the guest's TSC is the host's).";

/// Markdown: one table per bandwidth, plus the failures.
pub fn migrate_tables(p: &MigratePlan, records: &[RunRecord], systems: &[String]) -> String {
    let mut out = String::new();
    for bw in &p.bandwidths {
        out.push_str(&format!(
            "### Bandwidth {}\n\nMedians of the successful runs out of {} ({} guest, 1 vCPU unless the workload says otherwise, downtime target {} ms); `ok` = completed runs out of all; F/Q = Ferry/QEMU; QEMU's columns are its pre-copy, and for Ferry's `auto-converge` row QEMU's pre-copy with its `auto-converge` capability.\n\n{}\n{COLUMN_NOTE}\n\n",
            bw.label,
            p.reps,
            units::format_bytes(p.memory),
            p.max_downtime.as_millis(),
            bandwidth_table(p, records, systems, bw).to_markdown()
        ));
        if let Some(t) = claims_table(p, records, systems, bw) {
            out.push_str(&format!(
                "#### The seeds' claims, {}\n\nRatios of medians. Seed 003 claims about 10 % less data than Xen's pre-copy (`delayed` / `xen` bytes about 0.9); seed 000 claims less time and data under high load (`predictive` against `xen` and `downtime`). Targets of issue 8: the better seed strategy sends <= 0.9x `xen`'s bytes and <= 0.75x QEMU's.\n\n{}\n",
                bw.label,
                t.to_markdown()
            ));
        }
        if let Some(t) = postcopy_table(p, records, systems, bw) {
            out.push_str(&format!(
                "#### Post-copy, {}

Medians as above. Faults: how long a vCPU waited for a missing page on the destination (Ferry only). Bytes S->D: everything the source sent (pre-copy rounds included); D->S: what the destination sent back. kvstore: its own p99 request latency, median of the source's seconds before the migration / worst second during it (Ferry only). Ratios: guest downtime against QEMU's pre-copy, total time against QEMU's post-copy. Ferry's `downtime` (pre-copy) is there for reference.

{}
",
                bw.label,
                t.to_markdown()
            ));
        }
        if p.verify {
            out.push_str("Each completed run counts only if the guest's second self-verification on the destination passed (`--verify`).\n\n");
        }
    }
    let failures: Vec<&RunRecord> = records.iter().filter(|r| !r.ok).collect();
    if !failures.is_empty() {
        out.push_str("### Failed or non-converging runs\n\n");
        for r in failures {
            out.push_str(&format!(
                "- {} {} {} rep {}: {}\n",
                r.workload,
                r.system,
                r.bandwidth,
                r.rep + 1,
                r.error.as_deref().unwrap_or("?")
            ));
        }
    }
    out
}

/// One row per workload and Ferry strategy, QEMU's numbers beside them.
fn bandwidth_table(
    p: &MigratePlan,
    records: &[RunRecord],
    systems: &[String],
    bw: &BenchBandwidth,
) -> Table {
    let mut head = FERRY_COLUMNS.to_vec();
    if p.qemu {
        head.extend(QEMU_COLUMNS);
    }
    let mut t = Table::new(head);
    for w in &p.workloads {
        for s in systems.iter().filter(|s| !is_qemu(s)) {
            let c = Cell::of(records, w.name, s, &bw.label);
            let q = Cell::of(records, w.name, qemu_peer(s), &bw.label);
            let mut row = vec![
                w.name.to_string(),
                s.to_string(),
                c.ok_text(),
                fmt_opt(c.total_ms, 0),
                fmt_opt(c.downtime_ms, 1),
                c.guest_downtime_text(),
                fmt_opt(c.switchover_ms, 3),
                fmt_opt(c.heartbeat_gap_ms, 1),
                fmt_opt(c.tsc_gap_ms, 3),
                c.bytes_text(),
                fmt_opt(c.rounds, 0),
                fmt_opt(c.round1.map(|b| b / 1e9), 2),
            ];
            if p.qemu {
                row.extend(qemu_cells(&c, &q));
            }
            t.row(row);
        }
    }
    t
}

const POSTCOPY_COLUMNS: [&str; 14] = [
    "workload",
    "system",
    "ok",
    "total ms",
    "guest downtime ms",
    "fault p50 ms",
    "fault p99 ms",
    "pages requested / pushed",
    "post-copy ms",
    "bytes S->D (x memory)",
    "bytes D->S",
    "kvstore p99 before / during ms",
    "guest downtime / QEMU pre-copy",
    "total / QEMU postcopy",
];

/// Ferry's post-copy strategies and QEMU's post-copy, one row each per
/// workload; `None` when none of them ran.
fn postcopy_table(
    p: &MigratePlan,
    records: &[RunRecord],
    systems: &[String],
    bw: &BenchBandwidth,
) -> Option<Table> {
    let chosen: Vec<&String> = systems
        .iter()
        .filter(|s| *s == "downtime" || *s == "postcopy" || *s == "hybrid" || *s == QEMU_POSTCOPY)
        .collect();
    if chosen.iter().all(|s| *s == "downtime") {
        return None;
    }
    let mut t = Table::new(POSTCOPY_COLUMNS.to_vec());
    for w in &p.workloads {
        let pre = Cell::of(records, w.name, QEMU, &bw.label);
        let post = Cell::of(records, w.name, QEMU_POSTCOPY, &bw.label);
        for s in &chosen {
            let c = Cell::of(records, w.name, s, &bw.label);
            let pages = match (c.requested, c.pushed) {
                (Some(r), Some(p)) => format!("{r:.0} / {p:.0}"),
                _ => "-".into(),
            };
            t.row(vec![
                w.name.to_string(),
                system_name(s),
                c.ok_text(),
                fmt_opt(c.total_ms, 0),
                fmt_opt(c.guest_downtime_ms, 1),
                fmt_opt(c.fault_p50, 3),
                fmt_opt(c.fault_p99, 3),
                pages,
                fmt_opt(c.postcopy_ms, 0),
                c.bytes_text(),
                c.bytes_back
                    .map_or("-".into(), |b| units::format_bytes(b.round() as u64)),
                match (c.kv_before, c.kv_during) {
                    (Some(b), Some(d)) => format!("{b:.3} / {d:.3}"),
                    _ => "-".into(),
                },
                ratio_opt(c.guest_downtime_ms, pre.guest_downtime_ms),
                ratio_opt(c.total_ms, post.total_ms),
            ]);
        }
    }
    Some(t)
}

/// The seeds' claims against what this run measured, a row per workload;
/// `None` unless `xen` and a seed strategy ran.
fn claims_table(
    p: &MigratePlan,
    records: &[RunRecord],
    systems: &[String],
    bw: &BenchBandwidth,
) -> Option<Table> {
    let ran = |s: &str| systems.iter().any(|x| x == s);
    if !ran("xen") || !(ran("predictive") || ran("delayed")) {
        return None;
    }
    let mut t = Table::new(CLAIMS_COLUMNS.to_vec());
    for w in &p.workloads {
        let cell = |s: &str| Cell::of(records, w.name, s, &bw.label);
        let (xen, down, qemu) = (cell("xen"), cell("downtime"), cell(QEMU));
        let (pred, del) = (cell("predictive"), cell("delayed"));
        let best = [pred.bytes, del.bytes]
            .into_iter()
            .flatten()
            .min_by(f64::total_cmp);
        t.row(vec![
            w.name.to_string(),
            ratio_opt(del.bytes, xen.bytes),
            ratio_opt(pred.bytes, xen.bytes),
            ratio_opt(pred.total_ms, xen.total_ms),
            ratio_opt(pred.bytes, down.bytes),
            ratio_opt(pred.total_ms, down.total_ms),
            ratio_opt(best, xen.bytes),
            ratio_opt(best, qemu.bytes),
        ]);
    }
    Some(t)
}

const CLAIMS_COLUMNS: [&str; 8] = [
    "workload",
    "delayed / xen bytes",
    "predictive / xen bytes",
    "predictive / xen total",
    "predictive / downtime bytes",
    "predictive / downtime total",
    "best seed / xen bytes (<= 0.9)",
    "best seed / QEMU bytes (<= 0.75)",
];

/// How a system is named in tables and plots.
fn system_name(s: &str) -> String {
    match s {
        QEMU => "QEMU".into(),
        QEMU_POSTCOPY => "QEMU postcopy".into(),
        QEMU_AUTO_CONVERGE => "QEMU auto-converge".into(),
        s => format!("Ferry {s}"),
    }
}

/// QEMU's cell `q` and the Ferry/QEMU ratios for Ferry's cell `c`.
fn qemu_cells(c: &Cell, q: &Cell) -> [String; 12] {
    let q_ok = match &q.first_error {
        Some(e) if e.contains("converge") => format!("{} (no convergence)", q.ok_text()),
        _ => q.ok_text(),
    };
    [
        q_ok,
        fmt_opt(q.total_ms, 0),
        fmt_opt(q.downtime_ms, 1),
        q.guest_downtime_text(),
        fmt_opt(q.switchover_ms, 3),
        fmt_opt(q.heartbeat_gap_ms, 1),
        q.bytes_text(),
        fmt_opt(q.rounds, 0),
        ratio_opt(c.total_ms, q.total_ms),
        ratio_opt(c.downtime_ms, q.downtime_ms),
        ratio_opt(c.guest_downtime_ms, q.guest_downtime_ms),
        ratio_opt(c.bytes, q.bytes),
    ]
}

/// Grouped bar plots per bandwidth: workloads x (strategies + QEMU).
pub fn plots(
    out: &Path,
    p: &MigratePlan,
    records: &[RunRecord],
    systems: &[String],
) -> anyhow::Result<()> {
    let categories: Vec<String> = p.workloads.iter().map(|w| w.name.to_string()).collect();
    type Pick = fn(&Cell) -> Option<f64>;
    let metrics: [(&str, &str, Pick); 3] = [
        (
            "guest-downtime",
            "guest-visible downtime, sampled (ms)",
            |c| c.guest_downtime_ms,
        ),
        ("total-time", "total migration time (ms)", |c| c.total_ms),
        ("bytes", "bytes on the wire (MiB)", |c| {
            c.bytes.map(|b| b / (1u64 << 20) as f64)
        }),
    ];
    for bw in &p.bandwidths {
        for (file, label, pick) in metrics {
            let series: Vec<Series> = systems
                .iter()
                .map(|s| Series {
                    name: system_name(s),
                    values: p
                        .workloads
                        .iter()
                        .map(|w| pick(&Cell::of(records, w.name, s, &bw.label)).unwrap_or(0.0))
                        .collect(),
                })
                .collect();
            let svg = yardstick::plot::grouped_bars_svg(
                &format!("{label}, {} (median; 0 = no completed run)", bw.label),
                label,
                &categories,
                &series,
            )?;
            let name = format!("migrate-{file}-{}.svg", bw.label.replace('/', "_"));
            yardstick::plot::save(&out.join(name), &svg)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::{plan, test_args};
    use crate::bench::record::ferry_record;

    #[test]
    fn medians_use_completed_runs_and_failures_are_listed() {
        let records = vec![
            ferry_record(0, true, 100.0, 500),
            ferry_record(1, false, 1.0, 1),
            ferry_record(2, true, 300.0, 700),
        ];
        let c = Cell::of(&records, "idle", "downtime", "unlimited");
        assert_eq!((c.ok, c.runs), (2, 3));
        assert_eq!(c.total_ms, Some(200.0));
        assert_eq!(c.bytes, Some(600.0));
        assert_eq!(c.bytes_text(), "600 B (0.60x)");
        assert_eq!(c.first_error.as_deref(), Some("boom"));
        let mut p = plan(&test_args(&["--no-qemu", "--workloads", "idle"])).unwrap();
        p.bandwidths.retain(|b| b.label == "unlimited");
        let md = migrate_tables(&p, &records, &["downtime".to_string()]);
        assert!(md.contains("| 2/3 "), "{md}");
        assert!(md.contains(" 15.000 |"), "{md}");
        let mut coarse = ferry_record(3, true, 100.0, 500);
        coarse.ferry.as_mut().unwrap().guest_downtime_resolution_us = Some(2_000);
        let c = Cell::of(&[coarse], "idle", "downtime", "unlimited");
        assert_eq!(c.guest_downtime_text(), "15.000 (1 coarse)");
        assert!(md.contains("idle downtime unlimited rep 2: boom"), "{md}");
        assert!(!md.contains("Post-copy"), "{md}");
        let md = migrate_tables(&p, &records, &["postcopy".to_string()]);
        assert!(md.contains("#### Post-copy, unlimited"), "{md}");
        assert!(md.contains("| Ferry postcopy "), "{md}");
    }

    #[test]
    fn seed_claims_are_ratios_against_xen_and_downtime() {
        let run = |system: &str, total: f64, bytes: u64| {
            let mut r = ferry_record(0, true, total, bytes);
            r.system = system.into();
            r
        };
        let records = vec![
            run("xen", 100.0, 1000),
            run("delayed", 90.0, 900),
            run("predictive", 50.0, 800),
            run("downtime", 200.0, 1600),
        ];
        let mut p = plan(&test_args(&["--no-qemu", "--workloads", "idle"])).unwrap();
        p.bandwidths.retain(|b| b.label == "unlimited");
        let systems: Vec<String> = ["xen", "delayed", "predictive", "downtime"]
            .map(String::from)
            .to_vec();
        let md = migrate_tables(&p, &records, &systems);
        assert!(md.contains("#### The seeds' claims, unlimited"), "{md}");
        let claims = md.split("#### The seeds' claims").nth(1).unwrap();
        let row: Vec<&str> = claims
            .lines()
            .find(|l| l.starts_with("| idle "))
            .unwrap_or_else(|| panic!("{md}"))
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(
            row[2..10],
            [
                "0.90x", "0.80x", "0.50x", "0.50x", "0.25x", "0.80x", "-", ""
            ],
            "{md}"
        );
        let md = migrate_tables(&p, &records, &systems[..1]);
        assert!(!md.contains("seeds' claims"), "{md}");
    }
}
