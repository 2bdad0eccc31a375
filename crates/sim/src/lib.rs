//! Trace-driven data-center simulator for Ferry's migration manager.
//!
//! Hosts with SPECpower models, VMs whose CPU demand replays PlanetLab CoMon
//! traces, a 5-minute scheduling interval, live migrations that take memory /
//! bandwidth and cost the migrating VM 10 % of its CPU, and the `cluster`
//! decision engine choosing the migrations. Metrics are those of Beloglazov &
//! Buyya 2012 (energy, SLATAH, PDM, SLAV, ESV, migrations) plus host
//! shutdowns and load imbalance. docs/SIMULATOR.md describes the model.

// `!(x > 0.0)` is used on purpose: it also rejects NaN. Index loops over
// parallel per-host/per-VM arrays read better than zipped iterators here.
#![allow(clippy::neg_cmp_op_on_partial_ord, clippy::needless_range_loop)]

pub mod cli;
pub mod engine;
pub mod memory;
pub mod policy;
pub mod report;
pub mod scenario;
pub mod trace;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use engine::{
    DayResult, DaySimulation, MemoryOverBandwidth, MigrationTime, PreCopy, SimError, simulate_day,
};
pub use policy::Policy;
pub use report::{Results, Summary};
pub use scenario::{LoadedScenario, Scenario};
pub use trace::{Day, TraceError};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub loaded: LoadedScenario,
    pub trace_dir: PathBuf,
    pub policies: Vec<Policy>,
    pub seed: u64,
    /// Worker threads (results do not depend on it).
    pub threads: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error("day folder {0:?} is not in {1}")]
    UnknownDay(String, PathBuf),
    #[error(transparent)]
    TooLarge(#[from] memory::TooLarge),
}

/// The day folders a scenario selects.
pub fn select_days(s: &Scenario, trace_dir: &Path) -> Result<Vec<String>, RunError> {
    let all = trace::list_days(trace_dir)?;
    if let Some(names) = &s.simulation.day_names {
        for n in names {
            if !all.contains(n) {
                return Err(RunError::UnknownDay(n.clone(), trace_dir.to_path_buf()));
            }
        }
        return Ok(names.clone());
    }
    let n = s.simulation.days.unwrap_or(all.len()).min(all.len());
    Ok(all[..n].to_vec())
}

/// Loads the selected days' traces, after checking that the run fits in
/// memory with `threads` simulations at a time.
pub fn load_days(s: &Scenario, trace_dir: &Path, threads: usize) -> Result<Vec<Day>, RunError> {
    let days = select_days(s, trace_dir)?;
    let vms: Vec<u64> = days
        .iter()
        .map(|d| memory::count_files(&trace_dir.join(d)))
        .collect();
    memory::check(s, &vms, threads, memory::machine_bytes())?;
    days.iter()
        .map(|d| {
            trace::load_day(
                trace_dir,
                d,
                s.simulation.samples_per_day,
                s.simulation.vm_order,
            )
            .map_err(RunError::from)
        })
        .collect()
}

/// Runs every policy on every day; results are in policy order, then day order.
pub fn run(spec: &RunSpec) -> Result<Results, RunError> {
    let scenario = &spec.loaded.scenario;
    let days = load_days(scenario, &spec.trace_dir, spec.threads)?;
    let jobs: Vec<(usize, usize)> = (0..spec.policies.len())
        .flat_map(|p| (0..days.len()).map(move |d| (p, d)))
        .collect();
    // A bar on a terminal; one line per finished simulation otherwise
    // (when asked for, e.g. in a log).
    let total = jobs.len();
    let tty = spec.progress && std::io::stderr().is_terminal();
    let bar = if tty {
        let b = indicatif::ProgressBar::with_draw_target(
            Some(total as u64),
            indicatif::ProgressDrawTarget::stderr(),
        );
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
            )
            .expect("valid template"),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let done = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<DayResult, SimError>>>> =
        jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..spec.threads.max(1).min(jobs.len().max(1)) {
            sc.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(p, d)) = jobs.get(i) else { break };
                    let policy = &spec.policies[p];
                    let r = simulate_day(scenario, &days[d], policy, spec.seed);
                    let what = format!("{policy} {}", days[d].name);
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if tty {
                        bar.set_message(what);
                        bar.inc(1);
                    } else if spec.progress {
                        eprintln!("[{n}/{total}] {what}");
                    }
                    *results[i].lock().expect("no panics while holding") = Some(r);
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut out = Vec::with_capacity(jobs.len());
    for r in results {
        out.push(r.into_inner().expect("no panics").expect("every job ran")?);
    }
    Ok(Results {
        scenario: spec.loaded.origin.clone(),
        trace_dir: spec.trace_dir.display().to_string(),
        seed: spec.seed,
        tie_tolerance_w: spec.loaded.scenario.manager.tie_tolerance_w,
        summaries: report::summarize(&out),
        days: out,
    })
}
