//! `ferry receive` and `ferry migrate`: the two ends of a live migration.

use std::net::{Shutdown, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use api::Client;
use api::events::EventKind;
use api::routes;
use api::types::{MigrateRequest, vm_state};
use indicatif::{ProgressBar, ProgressStyle};
use migrate::{Admitted, Gate, MigrationReport, Phase, ProgressSnapshot, Secret, Session};
use units::{Bandwidth, ByteSize};

use crate::downtime::DowntimeProbe;
use crate::exit;
use crate::flags::MigrationArgs;
use crate::hosting::{HostArgs, Hosting};
use crate::instance::Instance;
use crate::migration::JobStatus;
use crate::run::SerialArgs;

/// How often a waiting receiver checks for a shutdown request.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

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
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = units::parse_duration)]
    pub recovery_timeout: Duration,
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
    let secret = Secret::from_file(&args.secret_file)?;
    let max_memory = args.max_memory.bytes();
    let listener = TcpListener::bind(&args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let mut hosting = Hosting::start(&args.host, vm_state::INCOMING)?;
    let host = hosting.instance.clone();
    let mut opts = migrate::DestOptions::new(secret, max_memory);
    opts.accept_timeout = args.accept_timeout;
    opts.fault_block_pages = args.postcopy_block;
    opts.recovery_timeout = args.recovery_timeout;
    let gate = migrate::listen(listener, &opts)?;
    tracing::info!(vm = %host.id(), "waiting for a VM on {}", gate.local_addr());
    let source = match next_unless_shutdown(&gate, opts.accept_timeout, &host) {
        Ok(Some(source)) => source,
        Ok(None) => {
            tracing::info!(vm = %host.id(), "shut down before any VM arrived");
            return Ok(exit::OK);
        }
        Err(e) => return Err(e).context("incoming migration failed; nothing runs here"),
    };
    // The port stays open only for this source to reconnect in post-copy.
    let mut factory = crate::adapter::Factory {
        serial: Some(args.output.sink(0)?),
        // The API says where the arriving VM's status page is, so a
        // sampler can follow the switchover.
        on_create: Some(Box::new({
            let host = host.clone();
            move |vm: &vmm::Vm| host.arriving(vm)
        })),
        events: Some(host.events().clone()),
    };
    let received = receive_unless_shutdown(source, &gate, &mut factory, &opts, &host);
    drop(gate);
    let received = match received {
        Ok(r) => r,
        Err(_) if host.shutdown_requested() => {
            tracing::info!(vm = %host.id(), "shut down during an incoming migration: it was abandoned and the VM stays on the source");
            return Ok(exit::OK);
        }
        Err(e) => return Err(e).context("incoming migration failed; nothing runs here"),
    };
    if host.shutdown_requested() {
        tracing::warn!(vm = %host.id(), "a shutdown was asked for during the incoming migration, which completed anyway: the VM runs here; ask again to stop it");
        hosting.forgive_shutdowns();
    }
    let r = &received.report;
    tracing::debug!(
        vm = %host.id(),
        pages = r.pages,
        rounds = r.rounds,
        bytes = r.bytes_received,
        "incoming migration done"
    );
    if r.postcopy_pages > 0 {
        let ms = |v: f64| units::format_duration(Duration::from_secs_f64(v / 1e3));
        tracing::info!(
            vm = %host.id(),
            "post-copy: {} pages fetched in {}; {} faults waited p50 {} p99 {}, {} in all",
            r.postcopy_pages,
            ms(r.postcopy_ms),
            r.faults,
            ms(r.fault_p50_ms),
            ms(r.fault_p99_ms),
            ms(r.fault_wait_ms),
        );
    }
    host.events().publish(EventKind::MigrationReceived {
        migration: format!("{:016x}", r.migration_id),
        from: r.peer.clone(),
    });
    hosting.run(received.vm.0)
}

/// Receives a VM from an authenticated `source`; a shutdown asked for
/// meanwhile closes the connection, so the migration fails (and rolls back
/// to the source) unless it is already past Commit.
fn receive_unless_shutdown(
    source: Admitted<Session>,
    gate: &Gate<Session>,
    factory: &mut crate::adapter::Factory,
    opts: &migrate::DestOptions,
    host: &Instance,
) -> anyhow::Result<migrate::Received<crate::adapter::Incoming>> {
    let watched = source.stream.try_clone()?;
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                // Once the VM runs here, cutting the link could only lose it.
                if host.shutdown_requested() && !opts.committed.load(Ordering::SeqCst) {
                    let _ = watched.shutdown(Shutdown::Both);
                    return;
                }
                std::thread::sleep(SHUTDOWN_POLL);
            }
        });
        let received = migrate::receive_with(source, Some(gate), factory, opts);
        done.store(true, Ordering::SeqCst);
        Ok(received?)
    })
}

/// The first source that authenticates at `gate`; `None` if a shutdown is
/// asked for first; an error once `accept_timeout` has passed.
fn next_unless_shutdown(
    gate: &Gate<Session>,
    accept_timeout: Option<Duration>,
    host: &Instance,
) -> Result<Option<Admitted<Session>>, migrate::MigrateError> {
    let deadline = accept_timeout.map(|t| Instant::now() + t);
    loop {
        if let Some(source) = gate.next(Some(SHUTDOWN_POLL)) {
            return Ok(Some(source));
        }
        if host.shutdown_requested() {
            return Ok(None);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(migrate::MigrateError::AcceptTimeout {
                waited: accept_timeout.unwrap_or_default(),
                refused: gate.stats().refused,
            });
        }
    }
}

/// Starts a migration through `client`, shows its progress, and returns
/// the final status. The source process is told to exit once the VM left.
pub fn drive(client: &Client, req: &MigrateRequest, show: bool) -> anyhow::Result<JobStatus> {
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
pub fn follow(client: &Client, show: bool) -> anyhow::Result<JobStatus> {
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
        let s: JobStatus = serde_json::from_value(v)?;
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
