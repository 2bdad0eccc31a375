//! `ferry bench faults`: docs/SAFETY.md's failure matrix (kill -9 either
//! process, cut, stall or corrupt the link, at each phase of pre-copy,
//! post-copy and hybrid) on real `ferry run` / `ferry receive` processes,
//! cycling through its [`cell`]s, with random failures at random times in
//! between. Each [`trial`] judges where the VM ended up, whether its own
//! integrity check passes there, and whether it ever ran twice; the
//! [`table`] sums them up by cell.

mod cell;
mod table;
mod trial;

use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::flags::positive;
use cell::{Plan, Rng};
use trial::Outcome;

/// Arguments of `ferry bench faults`.
#[derive(Debug, clap::Args)]
pub struct FaultsBenchArgs {
    /// Trials to run: the matrix's cells in turn, every third one random.
    #[arg(long, default_value = "200", value_name = "N", value_parser = positive())]
    pub trials: usize,
    /// Seed of the random trials (default: the clock; printed, so a run
    /// can be repeated).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Directory for the results (`faults.json`) and the logs of the
    /// trials that went wrong.
    #[arg(long, default_value = "/tmp/ferry-bench-faults", value_name = "DIR")]
    pub out: PathBuf,
    /// Run only the cells (and random trials) whose label contains this,
    /// e.g. `post-copy / cut link` (to repeat a failure with its --seed).
    #[arg(long, value_name = "TEXT")]
    pub only: Option<String>,
    /// Print the trials and the rows as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Every third trial is a random one.
const RANDOM_EVERY: usize = 3;

/// Random draws tried for one random trial that matches `--only`.
const DRAWS: usize = 1000;

/// The trials' plans: the matrix's cells whose label contains `only` in
/// turn, every third a random failure whose label contains it.
fn plans(trials: usize, seed: u64, only: &str) -> anyhow::Result<Vec<Plan>> {
    let matrix: Vec<Plan> = cell::matrix()
        .into_iter()
        .filter(|p| p.label().contains(only))
        .collect();
    let mut rng = Rng::new(seed);
    let mut next = 0;
    let mut plans = Vec::with_capacity(trials);
    for i in 0..trials {
        if i % RANDOM_EVERY == RANDOM_EVERY - 1 || matrix.is_empty() {
            let drawn = (0..DRAWS)
                .map(|_| cell::random(&mut rng))
                .find(|p| p.label().contains(only));
            if let Some(p) = drawn {
                plans.push(p);
                continue;
            }
        }
        anyhow::ensure!(!matrix.is_empty(), "no cell matches --only {only:?}");
        plans.push(matrix[next % matrix.len()]);
        next += 1;
    }
    Ok(plans)
}

/// Runs the bench; exits non-zero when a VM that had to survive was lost
/// or damaged, when one ran twice, or when a trial could not run.
pub fn run(a: &FaultsBenchArgs) -> anyhow::Result<i32> {
    let seed = a.seed.unwrap_or_else(|| crate::serial::now().to_bits());
    let plans = plans(a.trials, seed, a.only.as_deref().unwrap_or(""))?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create --out {}", a.out.display()))?;
    tracing::info!("bench faults: {} trials, --seed {seed}", a.trials);
    let bar = ProgressBar::with_draw_target(Some(a.trials as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} trial {pos}/{len} [{bar:30}] {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        bar.set_message(plan.label());
        let dir = a.out.join("trials").join(format!("{:03}", i + 1));
        let _ = std::fs::remove_dir_all(&dir);
        match trial::run(&dir, plan) {
            Ok(o) => {
                if o.bad() {
                    bar.suspend(|| {
                        tracing::warn!("trial {}: {o:?}; logs in {}", i + 1, dir.display())
                    });
                } else {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                outcomes.push(o);
            }
            Err(e) => {
                let line = format!("trial {} ({}): {e:#}", i + 1, plan.label());
                bar.suspend(|| tracing::warn!("{line}; logs in {}", dir.display()));
                errors.push(line);
            }
        }
        write_json(&a.out, seed, &outcomes, &errors)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let rows = table::rows(&outcomes);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json(seed, &outcomes, &errors))?
        );
    } else {
        println!(
            "ferry bench faults --trials {} --seed {seed}\n\n{}",
            a.trials,
            table::table(&rows).to_markdown()
        );
        for e in &errors {
            println!("- not run: {e}");
        }
    }
    let bad = outcomes.iter().filter(|o| o.bad()).count();
    if bad > 0 || !errors.is_empty() {
        tracing::error!(
            "bench faults: {bad} trials lost, damaged or split a VM that had to survive, {} could not run (--seed {seed}; see {})",
            errors.len(),
            a.out.display()
        );
        return Ok(crate::exit::FAILED);
    }
    Ok(crate::exit::OK)
}

fn json(seed: u64, outcomes: &[Outcome], errors: &[String]) -> serde_json::Value {
    serde_json::json!({
        "seed": seed,
        "rows": table::rows(outcomes),
        "trials": outcomes,
        "errors": errors,
    })
}

fn write_json(
    out: &Path,
    seed: u64,
    outcomes: &[Outcome],
    errors: &[String],
) -> anyhow::Result<()> {
    let path = out.join("faults.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json(seed, outcomes, errors))?,
    )
    .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trials_cycle_through_the_matrix_with_random_ones_between() {
        let p = plans(200, 1, "").unwrap();
        let random = p
            .iter()
            .filter(|p| matches!(p.when, cell::When::After(_)))
            .count();
        assert_eq!(random, 200 / RANDOM_EVERY);
        let cells = cell::matrix();
        let first: Vec<String> = p
            .iter()
            .filter(|p| matches!(p.when, cell::When::At(_)))
            .take(cells.len())
            .map(Plan::label)
            .collect();
        let all: Vec<String> = cells.iter().map(Plan::label).collect();
        assert_eq!(first, all, "every cell once before any twice");
        let only = plans(9, 1, "post-copy / cut link").unwrap();
        assert!(
            only.iter()
                .all(|p| p.label().contains("post-copy / cut link"))
        );
        assert!(plans(3, 1, "no such cell").is_err());
    }
}
