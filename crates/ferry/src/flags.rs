//! Flags shared by several subcommands, and the value parsers that turn
//! names and quantities into typed values (clap reports a bad value on one
//! line and exits with status 2; docs/CLI.md). Quantities are parsed by the
//! `units` crate only (docs/UNITS.md).

use std::time::Duration;

use api::types::MigrateRequest;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use migrate::{OnTimeout, StrategyKind, StrategyParams};
use units::Bandwidth;

/// A strategy name ([`migrate::STRATEGIES`]).
pub fn strategy() -> impl TypedValueParser<Value = StrategyKind> {
    PossibleValuesParser::new(migrate::STRATEGIES).try_map(|s| s.parse::<StrategyKind>())
}

/// An on-timeout action.
pub fn on_timeout() -> impl TypedValueParser<Value = OnTimeout> {
    let available = OnTimeout::ALL.map(|k| {
        PossibleValue::new(k.name()).help(match k {
            OnTimeout::Abort => "roll back: the VM keeps running here",
            OnTimeout::Force => "switch over now, whatever the downtime",
            OnTimeout::Postcopy => "switch to post-copy now: the VM runs on the destination",
            OnTimeout::AutoConverge => {
                "keep going with the vCPUs throttled more each round (QEMU's steps), then switch over"
            }
        })
    });
    PossibleValuesParser::new(available).try_map(|s| s.parse::<OnTimeout>())
}

/// A post-copy fault block (`ferry receive --postcopy-block`): a size in
/// whole pages from one page to [`migrate::MAX_FAULT_BLOCK_PAGES`]; pages.
pub fn fault_block(s: &str) -> Result<u64, String> {
    let b = units::ByteSize::parse(s)
        .map_err(|e| e.to_string())?
        .bytes();
    let page = migrate::PAGE_SIZE;
    let max = migrate::MAX_FAULT_BLOCK_PAGES;
    if b % page != 0 || !(1..=max).contains(&(b / page)) {
        return Err(format!(
            "a post-copy block is 4K to {} in whole 4K pages",
            units::format_bytes(max * page)
        ));
    }
    Ok(b / page)
}

/// A count of at least 1 (`--reps`, `--vcpus`...).
pub fn positive() -> impl TypedValueParser<Value = usize> {
    clap::value_parser!(u64)
        .range(1..)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// How to migrate: the flags `ferry migrate` and `ferry demo` share.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrationArgs {
    /// Migration strategy (docs/MIGRATION.md).
    #[arg(long, default_value = migrate::DEFAULT_STRATEGY, value_parser = strategy())]
    pub strategy: StrategyKind,
    /// A parameter of the strategy, e.g. `alpha=0.3` (repeatable; each
    /// strategy's parameters, ranges and defaults are in docs/MIGRATION.md).
    #[arg(long, value_name = "KEY=VALUE")]
    pub strategy_param: Vec<String>,
    /// Downtime target, a duration such as 300ms (docs/UNITS.md). A
    /// migration that completes above it exits with status 3.
    #[arg(long, default_value = "300ms", value_name = "DURATION", value_parser = units::parse_duration)]
    pub max_downtime: Duration,
    /// Pre-copy rounds at most (1-1000); replaces the strategy's own limit
    /// (30 for xen and downtime). See --on-timeout.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(migrate::MAX_ROUNDS)))]
    pub max_rounds: Option<u32>,
    /// Pre-copy time at most from the start, a duration such as 30s
    /// (docs/UNITS.md); replaces the strategy's own limit (60s for
    /// downtime). A round still running then is cut short. See --on-timeout.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    pub timeout: Option<Duration>,
    /// What to do when pre-copy reaches its round or time limit before the
    /// rest fits the downtime target.
    #[arg(long, value_name = "ACTION", default_value = "force", value_parser = on_timeout())]
    pub on_timeout: OnTimeout,
    /// In post-copy, and after a pre-copy's Commit until the source gives
    /// the VM up, the destination runs the VM only while it holds a lease
    /// this long that the source renews, 10ms to 60s (docs/SAFETY.md,
    /// "Leases"); with none it pauses itself.
    #[arg(long, default_value = "500ms", value_name = "DURATION", value_parser = lease)]
    pub lease: Duration,
    /// In post-copy or a leased commit, how long a broken link may take to
    /// come back: the source reconnects (authenticating again) with backoff
    /// until then; 0s gives up at once.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = units::parse_duration_or_zero)]
    pub recovery_timeout: Duration,
    /// In post-copy with a lease, how often the destination sends the
    /// pages the guest dirtied and its state back, so that the VM can
    /// resume on the source if the destination is lost; 0s: never (and a
    /// pre-copy's Commit goes out without a lease: a lost acknowledgement
    /// leaves it in doubt).
    #[arg(long, default_value = "100ms", value_name = "DURATION", value_parser = units::parse_duration_or_zero)]
    pub sync_interval: Duration,
}

/// A post-copy lease: a duration from 10ms to 60s.
pub fn lease(s: &str) -> Result<Duration, String> {
    let d = units::parse_duration(s).map_err(|e| e.to_string())?;
    if !node::migration::LEASE_RANGE.contains(&d) {
        return Err(format!("a lease of {s} is outside 10ms..60s"));
    }
    Ok(d)
}

impl MigrationArgs {
    /// The API request these flags ask for, without destination and secret.
    /// The strategy's parameters are checked here, so that a mistake is one
    /// line before anything starts.
    pub fn request(&self, max_bandwidth: Option<Bandwidth>) -> anyhow::Result<MigrateRequest> {
        let params = StrategyParams::parse(&self.strategy_param)?;
        self.strategy.build_with(&params)?;
        Ok(MigrateRequest {
            strategy: Some(self.strategy.name().to_string()),
            strategy_params: params.to_map(),
            max_bandwidth_bps: max_bandwidth.map(Bandwidth::bits_per_sec),
            max_downtime_ms: Some(self.max_downtime.as_secs_f64() * 1e3),
            max_rounds: self.max_rounds,
            timeout_ms: self
                .timeout
                .map(|t| u64::try_from(t.as_millis().max(1)).unwrap_or(u64::MAX)),
            on_timeout: Some(self.on_timeout.name().to_string()),
            lease_ms: Some(u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)),
            recovery_timeout_ms: Some(
                u64::try_from(self.recovery_timeout.as_millis()).unwrap_or(u64::MAX),
            ),
            sync_interval_ms: Some(
                u64::try_from(self.sync_interval.as_millis()).unwrap_or(u64::MAX),
            ),
            ..MigrateRequest::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        m: MigrationArgs,
    }

    fn parse(args: &[&str]) -> Result<MigrationArgs, String> {
        Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map(|c| c.m)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn migration_flags_parse_into_a_request() {
        let m = parse(&[
            "--strategy",
            "xen",
            "--max-downtime",
            "1us",
            "--max-rounds",
            "5",
            "--timeout",
            "10s",
            "--on-timeout",
            "abort",
        ])
        .unwrap();
        let r = m.request(Bandwidth::parse("1Gbit").ok()).unwrap();
        assert_eq!(r.strategy.as_deref(), Some("xen"));
        assert_eq!(r.max_downtime_ms, Some(0.001));
        assert_eq!((r.max_rounds, r.timeout_ms), (Some(5), Some(10_000)));
        assert_eq!(r.on_timeout.as_deref(), Some("abort"));
        assert_eq!(r.max_bandwidth_bps, Some(1_000_000_000));
        assert_eq!(r.lease_ms, Some(500));
        let d = parse(&[]).unwrap();
        assert_eq!(d.on_timeout, OnTimeout::Force);
        assert_eq!(d.strategy, StrategyKind::DEFAULT);
    }

    #[test]
    fn a_lease_is_10ms_to_60s() {
        assert_eq!(lease("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["5ms", "2m", "soon"] {
            let e = lease(bad).unwrap_err();
            assert_eq!(e.lines().count(), 1, "{bad}: {e}");
        }
    }

    #[test]
    fn a_fault_block_is_whole_pages_up_to_1m() {
        assert_eq!(fault_block("64K"), Ok(16));
        assert_eq!(fault_block("4K"), Ok(1));
        assert_eq!(fault_block("1M"), Ok(256));
        for bad in ["3K", "0", "2M", "6K", "fast"] {
            let e = fault_block(bad).unwrap_err();
            assert_eq!(e.lines().count(), 1, "{bad}: {e}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_one_line() {
        for (args, want) in [
            (&["--max-rounds", "0"][..], "--max-rounds"),
            (&["--max-rounds", "1001"][..], "--max-rounds"),
            (&["--timeout", "10"][..], "needs a unit"),
            (&["--timeout", "0s"][..], "greater than zero"),
            (&["--max-downtime", "3"][..], "needs a unit"),
            (&["--on-timeout", "pray"][..], "invalid value 'pray'"),
            (&["--strategy", "yolo"][..], "invalid value 'yolo'"),
        ] {
            let e = parse(args).unwrap_err();
            let first = e.lines().next().unwrap_or_default();
            assert!(first.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn strategy_params_are_checked_before_the_request() {
        let ok = parse(&["--strategy", "predictive", "--strategy-param", "alpha=0.3"]).unwrap();
        let r = ok.request(None).unwrap();
        assert_eq!(
            r.strategy_params.get("alpha").map(String::as_str),
            Some("0.3")
        );
        for args in [
            &["--strategy", "xen", "--strategy-param", "alpha=0.3"][..],
            &["--strategy", "predictive", "--strategy-param", "alpha=7"][..],
            &["--strategy-param", "noequals"][..],
        ] {
            let e = parse(args).unwrap().request(None).unwrap_err().to_string();
            assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
        }
    }
}
