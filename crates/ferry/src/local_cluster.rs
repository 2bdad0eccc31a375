//! `ferry cluster up` and `ferry cluster status`: a cluster on one
//! machine (the `testbed` crate); flags in, status lines and results out.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use units::Bandwidth;

/// Arguments of `ferry cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Start hosts (network namespaces on a bridge), their agents and VMs, and a manager; watch, then take it all down.
    Up(UpArgs),
    /// Show the hosts, pattern and migrations of the cluster running in a directory.
    Status(StatusArgs),
}

/// Arguments of `ferry cluster up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Hosts, 2 to 64: h1, h2... each a network namespace with its agent.
    #[arg(long, value_name = "N")]
    pub hosts: usize,
    /// VMs (dirtier guests), two per host on the first hosts at start.
    #[arg(long, value_name = "M")]
    pub vms: usize,
    /// Directory for state, logs, the store's socket and the results.
    #[arg(long, default_value = "ferry-cluster", value_name = "DIR")]
    pub dir: PathBuf,
    /// How long the cluster runs before it stops by itself, e.g. 2m.
    #[arg(long, default_value = "2m", value_name = "DURATION", value_parser = units::parse_duration)]
    pub duration: Duration,
    /// Each host's link, capped both ways by tc, e.g. 1Gbit.
    #[arg(long, default_value = "1Gbit", value_name = "RATE", value_parser = Bandwidth::parse)]
    pub link: Bandwidth,
    /// Each host's capacity in CPUs: its cgroup's CPU quota.
    #[arg(long, default_value_t = 0.5, value_name = "CPUS")]
    pub capacity: f64,
    /// How often the manager decides and a status line is printed, e.g. 2s.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = units::parse_duration)]
    pub interval: Duration,
    /// Run every host on loopback instead of in a namespace (no `ip` or
    /// `tc` needed; links are not capped).
    #[arg(long)]
    pub no_netns: bool,
}

/// Arguments of `ferry cluster status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The directory `ferry cluster up` runs in.
    #[arg(long, default_value = "ferry-cluster", value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn run(args: &ClusterArgs) -> anyhow::Result<i32> {
    match &args.command {
        ClusterCommand::Up(a) => up(a),
        ClusterCommand::Status(a) => status(a),
    }
}

/// The library's configuration for these flags.
pub fn config(args: &UpArgs, ferry: PathBuf) -> testbed::ClusterConfig {
    testbed::ClusterConfig {
        hosts: args.hosts,
        vms: args.vms,
        dir: args.dir.clone(),
        duration: args.duration,
        link: args.link,
        capacity: args.capacity,
        interval: args.interval,
        netns: !args.no_netns,
        ferry,
    }
}

fn up(args: &UpArgs) -> anyhow::Result<i32> {
    let ferry = std::env::current_exe().context("cannot find the ferry executable")?;
    let config = config(args, ferry);
    // Checked first so bad flags make nothing at all.
    config.validate().map_err(anyhow::Error::msg)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let mut cluster = testbed::Cluster::up(config)?;
    println!(
        "cluster in {}: {} hosts, {} VMs, {} for {} (Ctrl-C stops it; `ferry cluster status --dir {}`)",
        cluster.dir().display(),
        args.hosts,
        args.vms,
        if args.no_netns {
            "on loopback".to_string()
        } else {
            format!("links of {}", args.link)
        },
        units::format_duration(args.duration),
        cluster.dir().display()
    );
    cluster.run(&stop, |line| println!("{line}"));
    println!("stopping the manager, the agents and the VMs");
    let summary = cluster.down()?;
    println!(
        "{} migrations ordered, {} completed; timeline {} and {}",
        summary.orders,
        summary.completed,
        summary.json.display(),
        summary.svg.display()
    );
    if summary.left_behind.is_empty() {
        Ok(crate::exit::OK)
    } else {
        for what in &summary.left_behind {
            eprintln!("ferry: error: left behind: {what}");
        }
        Ok(crate::exit::FAILED)
    }
}

fn status(args: &StatusArgs) -> anyhow::Result<i32> {
    let socket = args.dir.join("store.sock");
    let none = || format!("no cluster runs in {}", args.dir.display());
    anyhow::ensure!(socket.exists(), "{} (no store socket there)", none());
    let store = store::Store::connect(&store::StoreConfig::Embedded {
        socket: socket.clone(),
        deadline: Duration::from_secs(2),
    })
    .with_context(none)?;
    let seen = testbed::Observed::read(&store).map_err(|e| {
        anyhow::anyhow!("{} (nothing answers on {}: {e})", none(), socket.display())
    })?;
    let mut hosts: Vec<String> = std::fs::read_dir(args.dir.join("hosts"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    hosts.sort();
    let mut tail = testbed::observe::DecisionTail::new(&args.dir.join("decisions.jsonl"));
    tail.poll();
    print!(
        "{}",
        testbed::status_text(&seen, &hosts, tail.last_interval.as_ref())
    );
    Ok(crate::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        c: ClusterCommand,
    }

    fn up_config(args: &[&str]) -> Result<testbed::ClusterConfig, String> {
        let argv = ["t", "up"].into_iter().chain(args.iter().copied());
        match Cli::try_parse_from(argv).map_err(|e| e.to_string())?.c {
            ClusterCommand::Up(a) => Ok(config(&a, "ferry".into())),
            ClusterCommand::Status(_) => unreachable!(),
        }
    }

    #[test]
    fn up_flags_become_a_config_and_bad_ones_one_line() {
        let c = up_config(&["--hosts", "3", "--vms", "4", "--link", "100Mbit"]).unwrap();
        assert_eq!((c.hosts, c.vms, c.capacity), (3, 4, 0.5));
        assert_eq!(c.link.bits_per_sec(), 100_000_000);
        assert_eq!(c.duration, Duration::from_secs(120));
        assert!(c.netns);
        assert_eq!(c.validate(), Ok(()));
        for (args, want) in [
            (&["--hosts", "2"][..], "--vms"),
            (
                &["--hosts", "2", "--vms", "1", "--duration", "10"][..],
                "needs a unit",
            ),
            (
                &["--hosts", "2", "--vms", "1", "--link", "fast"][..],
                "fast",
            ),
            (&["--hosts", "x", "--vms", "1"][..], "'x'"),
            (
                &["--hosts", "2", "--vms", "2", "--duration", "0s"][..],
                "greater than zero",
            ),
        ] {
            let e = up_config(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        for (args, want) in [
            (&["--hosts", "1", "--vms", "1"][..], "--hosts 1"),
            (&["--hosts", "2", "--vms", "5"][..], "--vms 5"),
            (
                &["--hosts", "2", "--vms", "2", "--capacity=-1"][..],
                "--capacity",
            ),
        ] {
            let e = up_config(args).unwrap().validate().unwrap_err();
            assert!(
                e.starts_with(want) && e.lines().count() == 1,
                "{args:?}: {e}"
            );
        }
    }
}
