//! `ferry demo`: a live migration between two Ferry processes on this
//! machine, with its report, a plot of its rounds, and the guest's own
//! integrity check on the destination.

use std::path::PathBuf;
use std::time::Duration;

use units::{Bandwidth, ByteSize};

use crate::flags::MigrationArgs;
use crate::pair::{GuestSpec, Pair};
use crate::serial::now;

/// Arguments of `ferry demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Guest RAM, a size such as 1G (docs/UNITS.md).
    #[arg(long, default_value = "1G", value_name = "SIZE", value_parser = ByteSize::parse)]
    pub memory: ByteSize,
    /// Parameters of the dirtier guest (docs/GUESTS.md).
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "ws=256M pattern=hot hot=0.1 hotshare=0.9 rate=10000 verify=1s"
    )]
    pub workload: String,
    #[command(flatten)]
    pub how: MigrationArgs,
    /// Bandwidth cap while the guest runs, a rate (docs/UNITS.md; the
    /// literature's links are 1 Gbit/s).
    #[arg(long, default_value = "1Gbit", value_name = "RATE", value_parser = Bandwidth::parse)]
    pub max_bandwidth: Bandwidth,
    /// Keep logs, secret and plot in this directory (default: a new temporary one).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<i32> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ferry-demo-{}", std::process::id())));
    eprintln!(
        "demo: source `ferry run` boots the dirtier ({}, {})",
        args.memory, args.workload
    );
    let mut pair = Pair::start(
        &dir,
        &GuestSpec {
            guest: "dirtier".into(),
            memory: args.memory,
            vcpus: 1,
            append: args.workload.clone(),
        },
    )?;
    eprintln!("demo: destination `ferry receive` listens on {}", pair.addr);
    pair.wait_source("the guest to dirty its working set", |g| {
        g.pages_written > 20_000
    })?;
    eprintln!("demo: migrating with strategy {}", args.how.strategy);
    let req = args.how.request(Some(args.max_bandwidth));
    let (report, error) = pair.migrate(req, !args.json)?;
    crate::live::print_report(Some(&report), args.json)?;
    if error.is_some() {
        return crate::live::outcome(Some(&report), error.as_deref());
    }
    let verify = pair.wait_line_after(&pair.dst_log, now(), "VERIFY", Duration::from_secs(60))?;
    let points: Vec<_> = report
        .per_round
        .iter()
        .map(|r| yardstick::plot::RoundPoint {
            round: r.round,
            pages_sent: r.pages_sent,
            dirty_rate: r.dirty_rate_bps / 8.0 / 4096.0,
        })
        .collect();
    let plot = dir.join("rounds.svg");
    let svg =
        yardstick::plot::rounds_svg("ferry demo: pages sent and dirty rate per round", &points)?;
    yardstick::plot::save(&plot, &svg)?;
    if !args.json {
        println!("integrity check on the destination: {verify}");
        println!(
            "logs and round plot ({}): {}",
            plot.display(),
            dir.display()
        );
    }
    pair.shutdown();
    if verify.starts_with("VERIFY ok") {
        crate::live::outcome(Some(&report), None)
    } else {
        anyhow::bail!("the guest's integrity check failed on the destination: {verify}")
    }
}
