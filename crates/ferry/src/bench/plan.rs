//! `ferry bench migrate`'s flags, checked into a [`MigratePlan`] before
//! anything starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser};
use migrate::StrategyKind;
use units::{Bandwidth, ByteSize};

use super::workload::{WORKLOADS, Workload};
use crate::flags::positive;

/// QEMU's pre-copy as a system of the matrix.
pub const QEMU: &str = "qemu";
/// QEMU's post-copy (`postcopy-ram`, `migrate-start-postcopy` at once).
pub const QEMU_POSTCOPY: &str = "qemu-postcopy";
/// QEMU's pre-copy with its `auto-converge` capability (vCPU throttling).
pub const QEMU_AUTO_CONVERGE: &str = "qemu-auto-converge";

/// Whether `system` is one of QEMU's.
pub fn is_qemu(system: &str) -> bool {
    system == QEMU || system == QEMU_POSTCOPY || system == QEMU_AUTO_CONVERGE
}

/// The QEMU system a Ferry strategy is compared with: QEMU's own
/// auto-converge for Ferry's, its pre-copy for the others.
pub fn qemu_peer(strategy: &str) -> &'static str {
    if strategy == "auto-converge" {
        QEMU_AUTO_CONVERGE
    } else {
        QEMU
    }
}

/// Arguments of `ferry bench migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateBenchArgs {
    /// Repetitions of each configuration (medians are reported).
    #[arg(long, default_value = "3", value_name = "N", value_parser = positive())]
    pub reps: usize,
    /// Workloads by name, comma-separated (`all` for every one).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "NAME",
        default_value = "idle,static,dirty-5k,dirty-20k,hot-20k,phase,drift-20k,max-2vcpu,kvstore",
        value_parser = workload_names()
    )]
    pub workloads: Vec<String>,
    /// Ferry strategies to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "NAME",
        default_value = "stop-and-copy,xen,downtime,predictive,delayed,auto-converge,postcopy,hybrid",
        value_parser = crate::flags::strategy()
    )]
    pub strategies: Vec<StrategyKind>,
    /// Bandwidth caps, comma-separated: `unlimited` or rates such as 1Gbit,
    /// 500Mbit (docs/UNITS.md).
    #[arg(long, value_delimiter = ',', value_name = "RATE", default_value = "1Gbit,unlimited", value_parser = parse_bandwidth)]
    pub bandwidths: Vec<BenchBandwidth>,
    /// Guest RAM, a size (docs/UNITS.md).
    #[arg(long, default_value = "512M", value_name = "SIZE", value_parser = ByteSize::parse)]
    pub memory: ByteSize,
    /// Downtime target, a duration (Ferry's --max-downtime, QEMU's downtime-limit).
    #[arg(long, default_value = "300ms", value_name = "DURATION", value_parser = units::parse_duration)]
    pub max_downtime: Duration,
    /// Extra time the workload runs after it reached its start point, a duration.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = units::parse_duration)]
    pub warmup: Duration,
    /// QEMU is cancelled (and counted as not converging) after this long, a duration.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = units::parse_duration)]
    pub qemu_timeout: Duration,
    /// Do not run QEMU even when it is installed.
    #[arg(long)]
    pub no_qemu: bool,
    /// After each completed migration, wait for the guest's second
    /// self-verification on the destination (a whole round run there) and
    /// count the run as failed unless it passed.
    #[arg(long)]
    pub verify: bool,
    /// Ferry's --sync-interval (default: its own, 100ms); 0s makes a
    /// pre-copy's Commit go out without a lease, for comparison.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration_or_zero)]
    pub sync_interval: Option<Duration>,
    /// Directory for the plots, the JSON of all runs and failed runs' logs.
    #[arg(long, default_value = "bench-out", value_name = "DIR")]
    pub out: PathBuf,
    /// Print runs.json's document on stdout instead of the tables.
    #[arg(long)]
    pub json: bool,
}

/// One bandwidth setting of the matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchBandwidth {
    pub label: String,
    /// The cap (`None` = unlimited).
    pub cap: Option<Bandwidth>,
}

fn parse_bandwidth(s: &str) -> Result<BenchBandwidth, units::ParseError> {
    if s.eq_ignore_ascii_case("unlimited") {
        return Ok(BenchBandwidth {
            label: "unlimited".into(),
            cap: None,
        });
    }
    Ok(BenchBandwidth {
        label: s.to_string(),
        cap: Some(Bandwidth::parse(s)?),
    })
}

/// The workload names (and `all`), each with what it runs, for --help.
fn workload_names() -> PossibleValuesParser {
    let each = WORKLOADS.iter().map(|w| {
        let mut about = if w.append.is_empty() {
            w.guest.to_string()
        } else {
            format!("{} {}", w.guest, w.append)
        };
        if w.vcpus > 1 {
            about.push_str(&format!(", {} vCPUs", w.vcpus));
        }
        PossibleValue::new(w.name).help(about)
    });
    PossibleValuesParser::new(each.chain([PossibleValue::new("all").help("every workload")]))
}

/// Everything the matrix needs, checked before anything starts.
pub struct MigratePlan {
    pub reps: usize,
    pub workloads: Vec<Workload>,
    pub strategies: Vec<String>,
    pub bandwidths: Vec<BenchBandwidth>,
    pub memory: u64,
    pub max_downtime: Duration,
    pub warmup: Duration,
    pub qemu_timeout: Duration,
    pub qemu: bool,
    pub verify: bool,
    pub sync_interval: Option<Duration>,
}

impl MigratePlan {
    /// The systems compared: Ferry's strategies, then QEMU (pre-copy),
    /// then QEMU's post-copy ([`QEMU_POSTCOPY`]) when a post-copy strategy
    /// of Ferry's runs and QEMU's auto-converge ([`QEMU_AUTO_CONVERGE`])
    /// when Ferry's does.
    pub fn systems(&self) -> Vec<String> {
        let has = |names: &[&str]| self.strategies.iter().any(|s| names.contains(&s.as_str()));
        let postcopy = has(&["postcopy", "hybrid"]);
        let auto_converge = has(&["auto-converge"]);
        self.strategies
            .iter()
            .cloned()
            .chain(self.qemu.then(|| QEMU.to_string()))
            .chain((self.qemu && postcopy).then(|| QEMU_POSTCOPY.to_string()))
            .chain((self.qemu && auto_converge).then(|| QEMU_AUTO_CONVERGE.to_string()))
            .collect()
    }
}

/// The workloads named in `--workloads` (`all` for every one), each once.
fn pick_workloads(names: &[String]) -> Vec<Workload> {
    WORKLOADS
        .iter()
        .filter(|w| names.iter().any(|n| n == "all" || n == w.name))
        .cloned()
        .collect()
}

pub fn plan(a: &MigrateBenchArgs) -> anyhow::Result<MigratePlan> {
    let workloads = pick_workloads(&a.workloads);
    let memory = a.memory.bytes();
    // The working set plus room for the guest's own tables and the kernel.
    let need = workloads.iter().map(|w| w.ws).max().unwrap_or(0) + (64 << 20);
    let need = need.max(128 << 20);
    if memory < need {
        anyhow::bail!(
            "--memory: {} is too small for the chosen workloads (at least {})",
            a.memory,
            units::format_bytes(need)
        );
    }
    if workloads.is_empty() || a.strategies.is_empty() || a.bandwidths.is_empty() {
        anyhow::bail!("--workloads, --strategies and --bandwidths need at least one value each");
    }
    let qemu = !a.no_qemu && yardstick::qemu::qemu_version(Path::new("qemu-system-x86_64")).is_ok();
    Ok(MigratePlan {
        reps: a.reps,
        workloads,
        strategies: a.strategies.iter().map(|s| s.name().to_string()).collect(),
        bandwidths: a.bandwidths.clone(),
        memory,
        max_downtime: a.max_downtime,
        warmup: a.warmup,
        qemu_timeout: a.qemu_timeout,
        qemu,
        verify: a.verify,
        sync_interval: a.sync_interval,
    })
}

/// Parses `ferry bench migrate` flags as clap does (for tests).
#[cfg(test)]
pub fn test_args(extra: &[&str]) -> MigrateBenchArgs {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        a: MigrateBenchArgs,
    }
    let argv = std::iter::once("bench").chain(extra.iter().copied());
    <Cli as clap::Parser>::try_parse_from(argv).unwrap().a
}

/// The error clap gives for these `ferry bench migrate` flags (for tests).
#[cfg(test)]
pub fn test_args_error(extra: &[&str]) -> String {
    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        a: MigrateBenchArgs,
    }
    let argv = std::iter::once("bench").chain(extra.iter().copied());
    <Cli as clap::Parser>::try_parse_from(argv)
        .unwrap_err()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(extra: &[&str]) -> String {
        test_args_error(extra)
    }

    #[test]
    fn bad_flags_are_refused_before_anything_runs() {
        assert!(err(&["--workloads", "idle,nope"]).contains("'nope'"));
        assert!(err(&["--strategies", "yolo"]).contains("yolo"));
        assert!(err(&["--bandwidths", "fast"]).contains("--bandwidths"));
        assert!(err(&["--reps", "0"]).contains("--reps"));
        assert!(err(&["--warmup", "soon"]).contains("--warmup"));
        assert!(err(&["--max-downtime", "0ms"]).contains("--max-downtime"));
        let small = plan(&test_args(&["--memory", "256M"])).err().unwrap();
        assert!(small.to_string().contains("too small"), "{small}");
        let help = err(&["--help"]);
        for w in WORKLOADS {
            assert!(help.contains(w.name), "{help}");
        }
    }

    #[test]
    fn defaults_cover_the_matrix() {
        let p = plan(&test_args(&["--no-qemu"])).unwrap();
        assert_eq!(p.reps, 3);
        assert_eq!(p.workloads.len(), WORKLOADS.len());
        assert_eq!(p.strategies, migrate::STRATEGIES);
        assert_eq!(p.systems(), migrate::STRATEGIES);
        assert_eq!(p.memory, 512 << 20);
        assert!(!p.qemu);
        let bw: Vec<_> = p.bandwidths.iter().map(|b| b.cap).collect();
        assert_eq!(bw, [Bandwidth::from_bits_per_sec(1_000_000_000), None]);
        let all = plan(&test_args(&["--no-qemu", "--workloads", "all"])).unwrap();
        assert_eq!(all.workloads.len(), WORKLOADS.len());
    }

    #[test]
    fn qemu_peers_follow_the_strategies_chosen() {
        let mut p = plan(&test_args(&["--no-qemu", "--strategies", "xen"])).unwrap();
        p.qemu = true;
        assert_eq!(p.systems(), ["xen", QEMU]);
        p.strategies = vec!["auto-converge".into(), "hybrid".into()];
        assert_eq!(
            p.systems(),
            [
                "auto-converge",
                "hybrid",
                QEMU,
                QEMU_POSTCOPY,
                QEMU_AUTO_CONVERGE
            ]
        );
        assert_eq!(qemu_peer("auto-converge"), QEMU_AUTO_CONVERGE);
        assert_eq!(qemu_peer("delayed"), QEMU);
    }
}
