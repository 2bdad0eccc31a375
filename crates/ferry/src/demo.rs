//! `ferry demo`: a live migration between two Ferry processes on this
//! machine, with its report, a plot of its rounds, and the guest's own
//! integrity check on the destination.

use std::path::PathBuf;
use std::time::Duration;

use crate::pair::{GuestSpec, MigrationSpec, Pair};
use crate::serial::now;

/// Arguments of `ferry demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Guest RAM.
    #[arg(long, default_value = "1G")]
    pub memory: String,
    /// Parameters of the dirtier guest.
    #[arg(
        long,
        default_value = "ws=256M pattern=hot hot=0.1 hotshare=0.9 rate=10000 verify=1s"
    )]
    pub workload: String,
    /// Migration strategy: stop-and-copy, xen or downtime.
    #[arg(long, default_value = migrate::DEFAULT_STRATEGY)]
    pub strategy: String,
    /// Bandwidth cap (the literature's links are 1 Gbit/s).
    #[arg(long, default_value = "1Gbit")]
    pub max_bandwidth: String,
    /// Downtime target.
    #[arg(long, default_value = "300ms")]
    pub max_downtime: String,
    /// Keep logs, secret and plot in this directory (default: a new temporary one).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<i32> {
    let spec = MigrationSpec {
        strategy: args.strategy.clone(),
        max_bandwidth: Some(args.max_bandwidth.clone()),
        max_downtime: args.max_downtime.clone(),
    };
    // Refuse bad flags before starting anything.
    crate::live::request(
        "127.0.0.1:1",
        &spec.strategy,
        spec.max_bandwidth.as_deref(),
        &spec.max_downtime,
        std::path::Path::new("/"),
    )?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ferry-demo-{}", std::process::id())));
    tracing::info!(
        "demo: source `ferry run` boots the dirtier ({}, {})",
        args.memory,
        args.workload
    );
    let mut pair = Pair::start(
        &dir,
        &GuestSpec {
            guest: "dirtier".into(),
            memory: args.memory.clone(),
            vcpus: 1,
            append: args.workload.clone(),
        },
    )?;
    tracing::info!("demo: destination `ferry receive` listens on {}", pair.addr);
    pair.wait_source("the guest to dirty its working set", |g| {
        g.pages_written > 20_000
    })?;
    tracing::info!("demo: migrating with strategy {}", args.strategy);
    let (report, error) = pair.migrate(&spec, !args.json)?;
    crate::live::print_report(Some(&report), args.json)?;
    if let Some(e) = error {
        anyhow::bail!("migration failed: {e}");
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
        Ok(0)
    } else {
        anyhow::bail!("the guest's integrity check failed on the destination: {verify}")
    }
}
