//! `ferry bench migrate`'s flags, checked into a [`MigratePlan`] before
//! anything starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::workload::{WORKLOADS, Workload};

/// Arguments of `ferry bench migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateBenchArgs {
    /// Repetitions of each configuration (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Workloads by name (see `WORKLOADS` in bench/workload.rs; `all` for every one).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "idle,static,dirty-5k,dirty-20k,hot-20k,phase,drift-20k,max-2vcpu,kvstore"
    )]
    pub workloads: Vec<String>,
    /// Ferry strategies to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "stop-and-copy,xen,downtime"
    )]
    pub strategies: Vec<String>,
    /// Bandwidth caps (`unlimited` or e.g. 1Gbit, 500Mbit).
    #[arg(long, value_delimiter = ',', default_value = "1Gbit,unlimited")]
    pub bandwidths: Vec<String>,
    /// Guest RAM.
    #[arg(long, default_value = "512M")]
    pub memory: String,
    /// Downtime target (Ferry's --max-downtime, QEMU's downtime-limit).
    #[arg(long, default_value = "300ms")]
    pub max_downtime: String,
    /// Extra time the workload runs after it reached its start point.
    #[arg(long, default_value = "2s")]
    pub warmup: String,
    /// QEMU is cancelled (and counted as not converging) after this long.
    #[arg(long, default_value = "30s")]
    pub qemu_timeout: String,
    /// Do not run QEMU even when it is installed.
    #[arg(long)]
    pub no_qemu: bool,
    /// After each completed migration, wait for the guest's second
    /// self-verification on the destination (a whole round run there) and
    /// count the run as failed unless it passed.
    #[arg(long)]
    pub verify: bool,
    /// Directory for the plots, the JSON of all runs and failed runs' logs.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
}

/// One bandwidth setting of the matrix.
#[derive(Debug, Clone)]
pub struct BenchBandwidth {
    pub label: String,
    /// For Ferry's request (`None` = unlimited).
    pub ferry: Option<String>,
    pub qemu: Option<units::Bandwidth>,
}

fn parse_bandwidth(s: &str) -> anyhow::Result<BenchBandwidth> {
    if s.eq_ignore_ascii_case("unlimited") {
        return Ok(BenchBandwidth {
            label: "unlimited".into(),
            ferry: None,
            qemu: None,
        });
    }
    let b = units::Bandwidth::parse(s).map_err(|e| anyhow::anyhow!("--bandwidths: {e}"))?;
    Ok(BenchBandwidth {
        label: s.to_string(),
        ferry: Some(s.to_string()),
        qemu: Some(b),
    })
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
}

impl MigratePlan {
    /// The systems compared: the Ferry strategies, then `qemu` if it runs.
    pub fn systems(&self) -> Vec<String> {
        self.strategies
            .iter()
            .cloned()
            .chain(self.qemu.then(|| "qemu".to_string()))
            .collect()
    }
}

/// The workloads named in `--workloads` (`all` for every one).
fn parse_workloads(names: &[String]) -> anyhow::Result<Vec<Workload>> {
    let mut workloads = Vec::new();
    for name in names {
        if name == "all" {
            workloads.extend(WORKLOADS.iter().cloned());
            continue;
        }
        let w = WORKLOADS.iter().find(|w| w.name == name).ok_or_else(|| {
            let known: Vec<_> = WORKLOADS.iter().map(|w| w.name).collect();
            anyhow::anyhow!(
                "--workloads: unknown workload {name:?} (known: {}, all)",
                known.join(", ")
            )
        })?;
        workloads.push(w.clone());
    }
    Ok(workloads)
}

pub fn plan(a: &MigrateBenchArgs) -> anyhow::Result<MigratePlan> {
    if a.reps == 0 {
        anyhow::bail!("--reps must be at least 1");
    }
    let workloads = parse_workloads(&a.workloads)?;
    for s in &a.strategies {
        s.parse::<migrate::StrategyKind>()
            .map_err(|e| anyhow::anyhow!("--strategies: {e}"))?;
    }
    let bandwidths = a
        .bandwidths
        .iter()
        .map(|b| parse_bandwidth(b))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let memory = units::ByteSize::parse(&a.memory)
        .map_err(|e| anyhow::anyhow!("--memory: {e}"))?
        .bytes();
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
    let dur = |flag: &str, s: &str| {
        units::parse_duration(s).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
    };
    let max_downtime = dur("max-downtime", &a.max_downtime)?;
    if max_downtime.is_zero() {
        anyhow::bail!("--max-downtime must be more than 0");
    }
    let warmup = dur("warmup", &a.warmup)?;
    let qemu_timeout = dur("qemu-timeout", &a.qemu_timeout)?;
    if workloads.is_empty() || a.strategies.is_empty() || bandwidths.is_empty() {
        anyhow::bail!("--workloads, --strategies and --bandwidths need at least one value each");
    }
    let qemu = !a.no_qemu && yardstick::qemu::qemu_version(Path::new("qemu-system-x86_64")).is_ok();
    Ok(MigratePlan {
        reps: a.reps,
        workloads,
        strategies: a.strategies.clone(),
        bandwidths,
        memory,
        max_downtime,
        warmup,
        qemu_timeout,
        qemu,
        verify: a.verify,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn err(extra: &[&str]) -> String {
        plan(&test_args(extra)).err().unwrap().to_string()
    }

    #[test]
    fn bad_flags_are_refused_before_anything_runs() {
        assert!(err(&["--workloads", "idle,nope"]).contains("\"nope\""));
        assert!(err(&["--strategies", "yolo"]).contains("yolo"));
        assert!(err(&["--bandwidths", "fast"]).contains("--bandwidths"));
        assert!(err(&["--memory", "256M"]).contains("too small"));
        assert!(err(&["--reps", "0"]).contains("--reps"));
        assert!(err(&["--warmup", "soon"]).contains("--warmup"));
        assert!(err(&["--max-downtime", "0ms"]).contains("--max-downtime"));
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
        let bw: Vec<_> = p
            .bandwidths
            .iter()
            .map(|b| (b.ferry.clone(), b.qemu))
            .collect();
        assert_eq!(
            bw,
            [
                (
                    Some("1Gbit".into()),
                    units::Bandwidth::from_bits_per_sec(1_000_000_000)
                ),
                (None, None)
            ]
        );
        let all = plan(&test_args(&["--no-qemu", "--workloads", "all"])).unwrap();
        assert_eq!(all.workloads.len(), WORKLOADS.len());
    }
}
