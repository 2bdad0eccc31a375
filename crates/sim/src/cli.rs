//! `ferry sim` command line.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, bail};
use cluster::PatternKind;

use crate::policy::{PAPER_POLICIES, Policy};
use crate::scenario::{DEFAULT_SCENARIO, Scenario};
use crate::trace::FileOrder;
use crate::{RunSpec, report};

/// Arguments of `ferry sim`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SimArgs {
    /// Scenario file (TOML); default: the built-in Beloglazov & Buyya 2012 setup
    /// (crates/sim/scenarios/default.toml).
    #[arg(short, long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Folder with one sub-folder of trace files per day; default: the
    /// scenario's trace_dir, else ../shared/traces/planetlab.
    #[arg(short, long, value_name = "DIR")]
    pub trace_dir: Option<PathBuf>,
    /// Simulate only the first N days (at least 1).
    #[arg(short, long, value_name = "N", value_parser = at_least_one())]
    pub days: Option<usize>,
    /// Simulate this day folder (repeat for several); overrides --days.
    #[arg(long = "day", value_name = "NAME")]
    pub day_names: Vec<String>,
    /// Policy to run, repeatable or comma-separated: npa, dvfs, or
    /// DETECTOR-SELECTOR[-PARAM] (thr|iqr|mad|lr|lrr|sp - mmt|rs|mc|mu|vsr),
    /// e.g. lr-mmt-1.2. Default: the scenario's list.
    #[arg(short, long = "policy", value_name = "NAME", value_delimiter = ',')]
    pub policies: Vec<String>,
    /// Run the policies of the paper's comparison (npa, dvfs, thr-mmt-1.0,
    /// thr-mmt-0.8, iqr-mmt-1.5, mad-mmt-2.5, lrr-mmt-1.2, lr-mmt-1.2).
    #[arg(long, conflicts_with = "policies")]
    pub paper: bool,
    /// Manager pattern: consolidate, balance or auto (overrides the scenario).
    #[arg(long, value_name = "PATTERN")]
    pub pattern: Option<PatternKind>,
    /// Whose semantics to follow: ferry (the default) or cloudsim
    /// (CloudSim 3.0.3's; overrides the scenario).
    #[arg(long, value_name = "MODEL")]
    pub model: Option<cluster::Model>,
    /// Power-aware placement: increases within W watts of the least count
    /// as equal, lowest host index first (0: the exact rule; overrides the
    /// scenario's `tie_tolerance_w`).
    #[arg(long, value_name = "W")]
    pub tie_tolerance_w: Option<f64>,
    /// How a day's trace files are numbered: name (sorted, the default) or
    /// listing (the folder's own order, as CloudSim's examples read it;
    /// overrides the scenario).
    #[arg(long, value_name = "ORDER", value_parser = parse_file_order)]
    pub vm_order: Option<FileOrder>,
    /// Seed for random VM selection (overrides the scenario).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Write summary.csv, days.csv, plot.svg, results.json (and pattern.svg
    /// when a day balanced) into this folder.
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print the results as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Show progress on stderr even when it is not a terminal.
    #[arg(long, conflicts_with = "no_progress")]
    pub progress: bool,
    /// Never show progress.
    #[arg(long)]
    pub no_progress: bool,
    /// Worker threads, at least 1 (default: the machine's cores); results
    /// do not depend on it.
    #[arg(long, value_name = "N", value_parser = at_least_one())]
    pub threads: Option<usize>,
    /// Print the built-in default scenario and exit.
    #[arg(long)]
    pub print_scenario: bool,
}

fn parse_file_order(s: &str) -> Result<FileOrder, String> {
    match s {
        "name" => Ok(FileOrder::Name),
        "listing" => Ok(FileOrder::Listing),
        _ => Err(format!("unknown VM order {s:?} (known: name, listing)")),
    }
}

/// A count of at least 1, refused by clap otherwise.
fn at_least_one() -> impl clap::builder::TypedValueParser<Value = usize> {
    use clap::builder::TypedValueParser;
    clap::value_parser!(u64)
        .range(1..)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Runs `ferry sim`.
pub fn run(args: &SimArgs) -> anyhow::Result<()> {
    if args.print_scenario {
        return print_stdout(DEFAULT_SCENARIO);
    }
    let spec = build_spec(args)?;
    let results = crate::run(&spec)?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let write = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
        };
        write("summary.csv", report::summary_csv(&results)?)?;
        write("days.csv", report::days_csv(&results)?)?;
        write(
            "results.json",
            serde_json::to_string_pretty(&results)? + "\n",
        )?;
        let svg = report::plot_svg(&results).map_err(|e| anyhow::anyhow!("plot: {e}"))?;
        write("plot.svg", svg)?;
        if let Some(svg) =
            report::pattern_svg(&results).map_err(|e| anyhow::anyhow!("pattern plot: {e}"))?
        {
            write("pattern.svg", svg)?;
        }
    }
    let text = if args.json {
        serde_json::to_string_pretty(&results)? + "\n"
    } else {
        report::table(&results)
    };
    print_stdout(&text)
}

/// Writes to stdout; a closed pipe (`ferry sim | head`) is not an error.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// Resolves the scenario, trace folder, days and policies from the arguments.
pub fn build_spec(args: &SimArgs) -> anyhow::Result<RunSpec> {
    let mut loaded = match &args.scenario {
        Some(p) => Scenario::load(p)?,
        None => Scenario::builtin(),
    };
    let sim = &mut loaded.scenario.simulation;
    if let Some(d) = args.days {
        sim.days = Some(d);
        sim.day_names = None;
    }
    if !args.day_names.is_empty() {
        sim.day_names = Some(args.day_names.clone());
    }
    if let Some(p) = args.pattern {
        loaded.scenario.manager.pattern = p;
    }
    if let Some(m) = args.model {
        loaded.scenario.simulation.model = m;
    }
    if let Some(w) = args.tie_tolerance_w {
        loaded.scenario.manager.tie_tolerance_w = w;
    }
    if let Some(o) = args.vm_order {
        loaded.scenario.simulation.vm_order = o;
    }
    // Overrides are checked like the file's own values, before any work.
    loaded.scenario.validate(&loaded.origin)?;
    let names: Vec<String> = if args.paper {
        PAPER_POLICIES.iter().map(|s| s.to_string()).collect()
    } else if !args.policies.is_empty() {
        args.policies.clone()
    } else {
        loaded.scenario.simulation.policies.clone()
    };
    if names.is_empty() {
        bail!("no policy to run: give --policy or list policies in the scenario");
    }
    let policies = names
        .iter()
        .map(|n| n.parse::<Policy>())
        .collect::<Result<Vec<_>, _>>()?;
    let trace_dir = match (&args.trace_dir, &loaded.scenario.simulation.trace_dir) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => match &loaded.base_dir {
            Some(base) if d.is_relative() => base.join(d),
            _ => d.clone(),
        },
        (None, None) => crate::trace::default_trace_dir().context(
            "no trace directory: ../shared/traces/planetlab was not found; pass --trace-dir DIR",
        )?,
    };
    let progress = if args.no_progress {
        false
    } else {
        args.progress || std::io::stderr().is_terminal()
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let seed = args.seed.unwrap_or(loaded.scenario.simulation.seed);
    Ok(RunSpec {
        loaded,
        trace_dir,
        policies,
        seed,
        threads,
        progress,
    })
}
