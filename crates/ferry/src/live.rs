//! `ferry receive` and `ferry migrate`: the two ends of a live migration.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use api::Client;
use api::routes;
use api::types::{MigrateRequest, MigrationStatus};
use indicatif::{ProgressBar, ProgressStyle};
use migrate::{MigrationReport, Phase, ProgressSnapshot, Secret};
use units::{Bandwidth, ByteSize};

use crate::downtime::DowntimeProbe;
use crate::exit;
use crate::flags::MigrationArgs;
use crate::run::{HostArgs, SerialArgs};

/// Arguments of `ferry receive`.
#[derive(Debug, clap::Args)]
pub struct ReceiveArgs {
    /// Address to listen on, e.g. 127.0.0.1:7000 or 0.0.0.0:7000.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// File with the migration secret shared with the source.
    #[arg(long, value_name = "FILE")]
    pub secret_file: PathBuf,
    /// Largest guest memory this host accepts, a size such as 16G (docs/UNITS.md).
    #[arg(long, default_value = "16G", value_name = "SIZE", value_parser = ByteSize::parse)]
    pub max_memory: ByteSize,
    #[command(flatten)]
    pub host: HostArgs,
    /// Give up when no source has authenticated within this long, e.g. 10m.
    /// Peers that fail to authenticate are refused (and logged); the
    /// receiver keeps waiting for its source. Default: wait for ever.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    pub accept_timeout: Option<std::time::Duration>,
    /// In post-copy, how much guest memory one page fault asks the source
    /// for: the aligned block around the faulting page, a size from 4K to
    /// 1M in whole pages (docs/MIGRATION.md, "Block size").
    #[arg(long, default_value = "64K", value_name = "SIZE", value_parser = crate::flags::fault_block)]
    pub postcopy_block: u64,
    /// In post-copy, how long to wait for the source to reconnect after the
    /// link broke, a duration such as 30s (0s: give up at once). The VM is
    /// fenced meanwhile once its lease lapses.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = units::parse_duration_or_zero)]
    pub recovery_timeout: Duration,
    /// Folder with the cluster CA and this host's certificate and key
    /// (`ferry pki init`): sources must complete mutual TLS with a
    /// certificate of the cluster before the secret's handshake.
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Directory for the arriving VM's memory (a shared tmpfs file), as
    /// `ferry run --state-dir`: if this process is killed while the VM
    /// moves on in post-copy, `ferry run --recover` finishes that move.
    /// Not on tmpfs: no post-copy into this host.
    #[arg(long, value_name = "DIR", default_value = node::statedir::DEFAULT_BASE)]
    pub state_dir: PathBuf,
    #[command(flatten)]
    pub output: SerialArgs,
}

/// Arguments of `ferry migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// API socket of the `ferry run` process whose VM moves.
    #[arg(long, value_name = "SOCKET")]
    pub api: PathBuf,
    /// Destination address (`ferry receive --listen`), host:port.
    #[arg(long, value_name = "ADDR")]
    pub to: String,
    #[command(flatten)]
    pub how: MigrationArgs,
    /// Bandwidth cap while the guest runs, a rate such as 1Gbit, 500Mbit or
    /// 100MB/s (bytes; docs/UNITS.md); the paused switchover uses the whole
    /// link, as in QEMU. Default: unlimited.
    #[arg(long, value_name = "RATE", value_parser = Bandwidth::parse)]
    pub max_bandwidth: Option<Bandwidth>,
    /// Emulate a link of this capacity, a rate (docs/UNITS.md): caps every
    /// round, the switchover included (to reproduce e.g. the literature's
    /// 1 Gbit/s links on loopback).
    #[arg(long, value_name = "RATE", value_parser = Bandwidth::parse)]
    pub link_bandwidth: Option<Bandwidth>,
    /// File with the migration secret shared with the destination.
    #[arg(long, value_name = "FILE")]
    pub secret_file: PathBuf,
    /// Folder with the cluster CA and this host's certificate and key
    /// (`ferry pki init`): the migration runs inside mutual TLS (the
    /// destination must have `--tls-dir` too).
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// With --tls-dir: the destination's host name; its certificate must be
    /// issued for it (`ferry pki init --hosts`), not just by the cluster CA,
    /// so no other member can answer in its place.
    #[arg(long, value_name = "HOST", requires = "tls_dir")]
    pub tls_name: Option<String>,
    /// Print the report as JSON (no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Timestamped serial logs of the source and the destination
    /// (`--serial FILE --timestamps` on both): fills in `heartbeat_gap_ms`,
    /// the largest heartbeat gap across the switchover.
    #[arg(long, num_args = 2, value_names = ["SOURCE_LOG", "DESTINATION_LOG"])]
    pub guest_logs: Option<Vec<PathBuf>>,
    /// API socket of the destination (`ferry receive --api`) on this host:
    /// the guest's pass counters are sampled on both sides for the
    /// guest-visible downtime (`guest_downtime_us` and its resolution).
    #[arg(long, value_name = "SOCKET")]
    pub dest_api: Option<PathBuf>,
}

pub fn receive(args: &ReceiveArgs) -> anyhow::Result<i32> {
    let config = node::IncomingConfig {
        accept_timeout: args.accept_timeout,
        fault_block_pages: args.postcopy_block,
        recovery_timeout: args.recovery_timeout,
        tls: args
            .tls_dir
            .as_deref()
            .map(tls::Credentials::load)
            .transpose()?,
        state_dir: Some(args.state_dir.clone()),
        ..node::IncomingConfig::new(
            args.listen.clone(),
            Secret::from_file(&args.secret_file)?,
            args.max_memory.bytes(),
        )
    };
    let ended = node::receive(config, &args.host.config(), &args.output.config())?;
    Ok(exit::of_hosting(ended))
}

/// Starts a migration through `client`, shows its progress, and returns
/// the final status. The source process is told to exit once the VM left.
pub fn drive(client: &Client, req: &MigrateRequest, show: bool) -> anyhow::Result<MigrationStatus> {
    client.put_ok(routes::VM_MIGRATE, Some(&serde_json::to_value(req)?))?;
    let status = follow(client, show)?;
    match status.report.as_ref().map(|r| r.vm_location) {
        // The VM runs on the destination: let the source process exit.
        Some(migrate::VmLocation::Destination) => {
            let _ = client.put(routes::VM_SHUTDOWN, None);
        }
        // In doubt: the source keeps the paused VM's memory, which may be
        // the only copy; an operator decides (docs/PROTOCOL.md).
        Some(migrate::VmLocation::Unknown) => tracing::warn!(
            "the commit is in doubt: the source keeps the paused VM; check the destination before stopping it"
        ),
        _ => {}
    }
    Ok(status)
}

/// Shows the progress of the migration `client`'s process runs (a bar
/// when `show`) until it is done; returns its final status.
pub fn follow(client: &Client, show: bool) -> anyhow::Result<MigrationStatus> {
    let bar = if show {
        ProgressBar::new(1)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {prefix:26} [{bar:30}] {binary_bytes}/{binary_total_bytes}\n  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let status = loop {
        let v = client.get_ok(routes::VM_MIGRATE)?;
        let s: MigrationStatus = serde_json::from_value(v)?;
        let p = &s.progress;
        bar.set_length(p.memory_bytes.max(1));
        bar.set_position(p.settled_bytes());
        bar.set_prefix(progress_phase(p));
        bar.set_message(progress_line(p));
        if s.done {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    bar.finish_and_clear();
    Ok(status)
}

pub fn migrate(args: &MigrateArgs) -> anyhow::Result<i32> {
    let mut req = args.how.request(args.max_bandwidth)?;
    req.to = args.to.clone();
    req.link_bandwidth_bps = args.link_bandwidth.map(Bandwidth::bits_per_sec);
    req.secret_file = Some(
        std::path::absolute(&args.secret_file)?
            .display()
            .to_string(),
    );
    if let Some(d) = &args.tls_dir {
        // Checked here for a clear error; the source process loads it.
        let creds = tls::Credentials::load(d)?;
        if let Some(host) = &args.tls_name {
            creds.expecting(host)?;
        }
        req.tls_dir = Some(std::path::absolute(d)?.display().to_string());
        req.tls_name = args.tls_name.clone();
    }
    let client = Client::new(&args.api);
    let probe = args
        .dest_api
        .as_deref()
        .map(|d| DowntimeProbe::start(&client, d))
        .transpose()
        .context("--dest-api")?;
    let started = crate::serial::now();
    let mut status = drive(&client, &req, !args.json)?;
    if let (Some(probe), Some(report)) = (probe, status.report.as_mut()) {
        probe.finish(report);
    }
    if let (Some(logs), Some(report)) = (&args.guest_logs, status.report.as_mut())
        && status.error.is_none()
    {
        // Give the destination's first heartbeats time to reach its log.
        std::thread::sleep(Duration::from_millis(500));
        report.heartbeat_gap_ms =
            crate::serial::heartbeat_gap_ms(&logs[0], &logs[1], started, crate::serial::now())?;
    }
    print_report(status.report.as_ref(), args.json)?;
    outcome(status.report.as_ref(), status.error.as_deref())
}

/// The exit status of a finished migration (docs/CLI.md): a completed
/// migration that missed its downtime target says so and exits with
/// [`exit::DOWNTIME_MISSED`]; a failure or a commit in doubt is an error.
pub fn outcome(report: Option<&MigrationReport>, error: Option<&str>) -> anyhow::Result<i32> {
    let Some(report) = report else {
        anyhow::bail!("{}", error.unwrap_or("the source gave no report"));
    };
    let code = exit::of_migration(report);
    match code {
        exit::OK => Ok(code),
        exit::DOWNTIME_MISSED => {
            eprintln!(
                "ferry: warning: the VM moved, but its downtime ({:.1} ms) exceeded the {} target",
                report.downtime_ms.unwrap_or_default(),
                units::format_duration(
                    Duration::try_from_secs_f64(report.max_downtime_ms / 1e3).unwrap_or_default()
                )
            );
            Ok(code)
        }
        _ => Err(exit::Coded {
            code,
            error: anyhow::anyhow!(
                "{}",
                error.map_or_else(|| report.outcome.to_string(), str::to_string)
            ),
        }
        .into()),
    }
}

/// The phase and round, for the progress bar.
fn progress_phase(p: &ProgressSnapshot) -> String {
    match p.phase {
        Phase::Iterative | Phase::StopAndCopy => format!("{:?} round {}", p.phase, p.round),
        phase => format!("{phase:?}"),
    }
}

/// What is left, what was resent, the rates and the expected downtime, as
/// QEMU's `info migrate` shows them.
fn progress_line(p: &ProgressSnapshot) -> String {
    format!(
        "left {} | resent {} | sending {} | guest dirties {} | expected downtime {}",
        units::format_bytes(p.remaining_bytes),
        units::format_bytes(p.resent_bytes),
        units::format_bits_per_sec(p.rate_bps as f64),
        units::format_bits_per_sec(p.dirty_rate_bps as f64),
        units::format_duration(Duration::from_micros(
            (p.estimated_downtime_ms * 1e3).round() as u64
        ))
    )
}

pub fn print_report(report: Option<&MigrationReport>, json: bool) -> anyhow::Result<()> {
    if let Some(r) = report {
        if json {
            println!("{}", serde_json::to_string_pretty(r)?);
        } else {
            println!("{r}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_is_not_full_while_pages_are_resent() {
        let p = ProgressSnapshot {
            phase: Phase::Iterative,
            round: 3,
            remaining_bytes: 21 << 20,
            bytes_sent: 1300 << 20,
            resent_bytes: 310 << 20,
            memory_bytes: 1 << 30,
            rate_bps: 941_000_000,
            dirty_rate_bps: 120_000_000,
            estimated_downtime_ms: 180.0,
        };
        assert!(p.settled_bytes() < p.memory_bytes);
        assert_eq!(progress_phase(&p), "Iterative round 3");
        let line = progress_line(&p);
        for want in [
            "left 21 MiB",
            "resent 310 MiB",
            "941.00 Mbit/s",
            "120.00 Mbit/s",
            "expected downtime 180ms",
        ] {
            assert!(line.contains(want), "{want}: {line}");
        }
    }
}
