//! `ferry bench`: measurements with medians of several runs, QEMU side by
//! side where it applies. Results are printed as Markdown tables for
//! docs/BENCHMARKS.md.
//!
//! - [`boot`]: VMM start to the guest's first heartbeat.
//! - [`snapshot`]: snapshot and restore throughput.
//! - [`dirty`]: the dirtier's write rate with dirty logging off and on.
//! - [`faults`]: docs/SAFETY.md's failure matrix and random failures on
//!   real processes: where the VM survives, intact, and never twice.
//! - `bench migrate`: [`plan`] (flags checked into a matrix over the
//!   [`workload`] table), [`migrate`] (one Ferry or QEMU migration per
//!   cell and repetition, kept as a [`record`]), [`report`] (tables, plots).

mod boot;
mod dirty;
mod faults;
mod migrate;
mod plan;
mod record;
mod report;
mod snapshot;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plan::MigrateBenchArgs;
use units::ByteSize;
use yardstick::table::Table;

use crate::flags::positive;
use node::Instance;

/// Arguments of `ferry bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchWhat {
    /// Time from starting the VMM to the guest's first heartbeat, Ferry and QEMU.
    Boot {
        /// Repetitions (the median is reported).
        #[arg(long, default_value = "5", value_name = "N", value_parser = positive())]
        reps: usize,
        /// Print the samples and medians as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Snapshot and restore throughput of guests with a 25% written working set.
    Snapshot {
        /// Guest sizes to measure, comma-separated sizes (docs/UNITS.md).
        #[arg(long, value_delimiter = ',', default_value = "1G,4G", value_name = "SIZE", value_parser = ByteSize::parse)]
        sizes: Vec<ByteSize>,
        /// Repetitions for each size (the median is reported).
        #[arg(long, default_value = "3", value_name = "N", value_parser = positive())]
        reps: usize,
        /// Directory for the snapshot files.
        #[arg(long, default_value = "/tmp", value_name = "DIR")]
        dir: PathBuf,
        /// Print the samples and medians as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Live migration between two Ferry processes for each workload x
    /// strategy x bandwidth, with QEMU's live migration of the same guest
    /// in the same run (when installed).
    Migrate(MigrateBenchArgs),
    /// The dirtier's achieved write rate with dirty logging off and on.
    DirtyRate {
        /// Repetitions for each pattern (the median is reported).
        #[arg(long, default_value = "3", value_name = "N", value_parser = positive())]
        reps: usize,
        /// How long each measurement lasts, a duration (docs/UNITS.md).
        #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = units::parse_duration)]
        duration: Duration,
        /// Print the samples and medians as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Failures injected into live migrations between two Ferry processes:
    /// every cell of docs/SAFETY.md's matrix in turn, and random ones.
    Faults(faults::FaultsBenchArgs),
}

pub fn run(args: &BenchArgs) -> anyhow::Result<i32> {
    match &args.what {
        BenchWhat::Boot { reps, json } => boot::run(*reps, *json),
        BenchWhat::Snapshot {
            sizes,
            reps,
            dir,
            json,
        } => snapshot::run(sizes, *reps, dir, *json),
        BenchWhat::DirtyRate {
            reps,
            duration,
            json,
        } => dirty::run(*reps, *duration, *json),
        BenchWhat::Migrate(a) => migrate::run(a),
        BenchWhat::Faults(a) => return faults::run(a),
    }?;
    Ok(crate::exit::OK)
}

/// Prints a benchmark's result: `table` with its caption, or `json`.
fn print(caption: &str, table: &Table, json: Option<serde_json::Value>) -> anyhow::Result<()> {
    match json {
        Some(doc) => println!("{}", serde_json::to_string_pretty(&doc)?),
        None => println!("{caption}\n\n{}", table.to_markdown()),
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Boots a dirtier and waits until it has written its whole working set once.
fn warm_dirtier(memory: u64, ws: u64, pattern: &str) -> anyhow::Result<Arc<Instance>> {
    let cmdline = format!(
        "ws={}K pattern={pattern} rate=0 hb=10ms verify=3600s",
        ws >> 10
    );
    let vm = vmm::Vm::boot(
        &vmm::BootSpec {
            kernel: crate::guests::image("dirtier")?,
            kernel_name: "dirtier".into(),
            cmdline,
            memory_bytes: memory,
            vcpus: 1,
        },
        Box::new(|_, _| {}),
    )?;
    let host = Instance::new("bench", api::types::vm_state::BOOTING);
    host.attach(vm);
    let pages = ws / 4096;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(c) = host.guest_counters()
            && c.pages_written >= pages
        {
            return Ok(host);
        }
        if Instant::now() > deadline {
            anyhow::bail!("the dirtier did not write its working set within 10 minutes");
        }
        if let Some(vm) = host.vm()
            && let vmm::RunState::Exited(r) = vm.run_state()
        {
            anyhow::bail!("the dirtier ended early: {r:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
