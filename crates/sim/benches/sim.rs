//! `cargo bench -p sim`: the whole 10-day PlanetLab workload, one policy on
//! one thread, and all of the paper's policies on all cores; medians of
//! several repetitions, trace loading included. Then the scale runs: day
//! 20110303 replicated k times on k x 800 hosts (k = 1, 5, 20), one
//! thread, time against hosts, plotted to target/tmp/sim-scale.svg.
//! Set FERRY_TRACES to point at the traces when
//! ../shared/traces/planetlab is not found; FERRY_SIM_BENCH=scale runs only
//! the scale part, FERRY_SIM_BENCH=days only the first.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sim::{Policy, RunSpec, Scenario};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// CPU time of this process (user + system), from /proc/self/stat (Linux),
/// so a loaded machine can be told apart from a slow simulator.
pub(crate) fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10)) // USER_HZ is 100 on Linux
}

pub(crate) struct Timing {
    wall: Duration,
    min: Duration,
    max: Duration,
    cpu: Option<Duration>,
}

fn time(spec: &RunSpec, reps: usize) -> Timing {
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..reps {
        let c = cpu_time();
        let t = Instant::now();
        let r = sim::run(spec).expect("simulation runs");
        wall.push(t.elapsed());
        if let (Some(a), Some(b)) = (c, cpu_time()) {
            cpu.push(b - a);
        }
        std::hint::black_box(r);
    }
    let min = *wall.iter().min().expect("reps > 0");
    let max = *wall.iter().max().expect("reps > 0");
    let cpu = (cpu.len() == reps).then(|| median(cpu));
    Timing {
        wall: median(wall),
        min,
        max,
        cpu,
    }
}

mod scale;

fn main() {
    let only = std::env::var("FERRY_SIM_BENCH").unwrap_or_default();
    let trace_dir = std::env::var_os("FERRY_TRACES")
        .map(PathBuf::from)
        .or_else(sim::trace::default_trace_dir)
        .expect("PlanetLab traces not found: set FERRY_TRACES");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let loaded = Scenario::builtin();
    let days = sim::select_days(&loaded.scenario, &trace_dir)
        .expect("day folders")
        .len();
    println!(
        "traces: {} ({days} days), {cores} cores",
        trace_dir.display()
    );
    if only != "scale" {
        ten_days(&loaded, &trace_dir, days, cores);
    }
    if only != "days" {
        scale::run(&trace_dir);
    }
}

/// The 10-day runs of the paper set-up.
fn ten_days(loaded: &sim::LoadedScenario, trace_dir: &std::path::Path, days: usize, cores: usize) {
    let spec = |policies: &[&str], threads| RunSpec {
        loaded: loaded.clone(),
        trace_dir: trace_dir.to_path_buf(),
        policies: policies
            .iter()
            .map(|p| p.parse::<Policy>().expect("known policy"))
            .collect(),
        seed: 1,
        threads,
        progress: false,
    };
    let report = |name: &str, t: Timing| {
        let cpu = t
            .cpu
            .map_or("n/a".to_string(), |c| format!("{:.2} s", c.as_secs_f64()));
        println!(
            "{name:<40} wall median {:>6.3} s (min {:.3}, max {:.3}), CPU median {cpu}",
            t.wall.as_secs_f64(),
            t.min.as_secs_f64(),
            t.max.as_secs_f64()
        );
    };
    for p in [
        "lr-mmt-1.2",
        "thr-mmt-0.8",
        "mad-mmt-2.5",
        "iqr-mmt-1.5",
        "dvfs",
    ] {
        report(
            &format!("{p}, {days} days, 1 thread"),
            time(&spec(&[p], 1), 3),
        );
        report(
            &format!("{p}, {days} days, {cores} threads"),
            time(&spec(&[p], cores), 3),
        );
    }
    let all = sim::policy::PAPER_POLICIES;
    report(
        &format!("{} paper policies, {days} days, {cores} threads", all.len()),
        time(&spec(all, cores), 3),
    );
    report(
        &format!("{} paper policies, {days} days, 1 thread", all.len()),
        time(&spec(all, 1), 1),
    );
}
