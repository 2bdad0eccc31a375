//! `ferry receive` and `ferry migrate`: the two ends of a live migration.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::Client;
use api::routes;
use api::types::MigrateRequest;
use indicatif::{ProgressBar, ProgressStyle};
use migrate::{MigrationReport, Secret};
use units::Bandwidth;

use crate::downtime::DowntimeProbe;
use crate::instance::Instance;
use crate::migration::JobStatus;
use crate::run::SerialArgs;

/// Arguments of `ferry receive`.
#[derive(Debug, clap::Args)]
pub struct ReceiveArgs {
    /// Address to listen on, e.g. 127.0.0.1:7000 or 0.0.0.0:7000.
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// File with the migration secret shared with the source.
    #[arg(long, value_name = "FILE")]
    pub secret_file: PathBuf,
    /// Largest guest memory this host accepts.
    #[arg(long, default_value = "16G", value_name = "SIZE")]
    pub max_memory: String,
    /// Serve the control API on this Unix socket: state `receiving` while
    /// the VM arrives, then the VM's.
    #[arg(long, value_name = "SOCKET")]
    pub api: Option<PathBuf>,
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
    /// stop-and-copy, xen or downtime.
    #[arg(long, default_value = migrate::DEFAULT_STRATEGY)]
    pub strategy: String,
    /// Bandwidth cap while the guest runs, e.g. 1Gbit, 500Mbit, 100MB
    /// (bytes); the paused switchover uses the whole link, as in QEMU.
    /// Default: unlimited.
    #[arg(long, value_name = "RATE")]
    pub max_bandwidth: Option<String>,
    /// Emulate a link of this capacity: caps every round, the switchover
    /// included (to reproduce e.g. the literature's 1 Gbit/s links on loopback).
    #[arg(long, value_name = "RATE")]
    pub link_bandwidth: Option<String>,
    /// Downtime target, e.g. 300ms.
    #[arg(long, default_value = "300ms", value_name = "TIME")]
    pub max_downtime: String,
    /// File with the migration secret shared with the destination.
    #[arg(long, value_name = "FILE")]
    pub secret_file: PathBuf,
    /// Print the report as JSON.
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
    let max_memory = units::ByteSize::parse(&args.max_memory)
        .map_err(|e| anyhow::anyhow!("--max-memory: {e}"))?
        .bytes();
    let listener = TcpListener::bind(&args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("ferry: waiting for a VM on {}", listener.local_addr()?);
    // The API answers from the start, so a sampler finds the arriving VM.
    let arrival = Arc::new(crate::control::Arrival::default());
    let _server = match args.api.as_deref() {
        Some(path) => Some(crate::control::start_receiving(arrival.clone(), path)?),
        None => None,
    };
    let mut factory = crate::adapter::Factory {
        serial: Some(args.output.sink(0)?),
        on_create: Some(Box::new({
            let arrival = arrival.clone();
            move |vm: &vmm::Vm| arrival.arriving(vm)
        })),
    };
    let opts = migrate::DestOptions::new(secret, max_memory);
    let received = migrate::accept_one(&listener, &mut factory, &opts)
        .context("incoming migration failed; nothing runs here")?;
    eprintln!(
        "ferry: VM received from {} ({} pages in {} rounds); running",
        received.report.peer.as_deref().unwrap_or("?"),
        received.report.pages,
        received.report.rounds
    );
    let host = Arc::new(Instance::new(received.vm.0));
    arrival.arrived(host.clone());
    crate::run::host_until_end(&host)
}

/// Builds the API request for a migration.
pub fn request(
    to: &str,
    strategy: &str,
    max_bandwidth: Option<&str>,
    max_downtime: &str,
    secret_file: &std::path::Path,
) -> anyhow::Result<MigrateRequest> {
    strategy.parse::<migrate::StrategyKind>()?;
    let bw = parse_bandwidth(max_bandwidth, "--max-bandwidth")?;
    let downtime =
        units::parse_duration(max_downtime).map_err(|e| anyhow::anyhow!("--max-downtime: {e}"))?;
    Ok(MigrateRequest {
        to: to.to_string(),
        strategy: Some(strategy.to_string()),
        max_bandwidth_bps: bw.map(|b| b.bits_per_sec()),
        link_bandwidth_bps: None,
        max_downtime_ms: Some(downtime.as_millis().max(1) as u64),
        secret_file: Some(std::path::absolute(secret_file)?.display().to_string()),
    })
}

fn parse_bandwidth(text: Option<&str>, flag: &str) -> anyhow::Result<Option<Bandwidth>> {
    text.map(|s| Bandwidth::parse(s).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
        .transpose()
}

/// Starts a migration through `client`, shows its progress, and returns
/// the final status. The source process is told to exit once the VM left.
pub fn drive(client: &Client, req: &MigrateRequest, show: bool) -> anyhow::Result<JobStatus> {
    client.put_ok(routes::VM_MIGRATE, Some(&serde_json::to_value(req)?))?;
    let bar = if show {
        ProgressBar::new(1)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:60} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let status = loop {
        let v = client.get_ok(routes::VM_MIGRATE)?;
        let s: JobStatus = serde_json::from_value(v)?;
        let p = &s.progress;
        bar.set_length(p.memory_bytes.max(1));
        bar.set_position(p.bytes_sent.min(p.memory_bytes));
        bar.set_message(format!(
            "{:?} round {} | dirty {} | {} | est. downtime {:.0} ms",
            p.phase,
            p.round,
            units::format_bytes(p.remaining_dirty_bytes),
            units::format_bits_per_sec(p.rate_bps as f64),
            p.estimated_downtime_ms
        ));
        if s.done {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    bar.finish_and_clear();
    match status.report.as_ref().map(|r| r.vm_location) {
        // The VM runs on the destination: let the source process exit.
        Some(migrate::VmLocation::Destination) => {
            let _ = client.put(routes::VM_SHUTDOWN, None);
        }
        // In doubt: the source keeps the paused VM's memory, which may be
        // the only copy; an operator decides (docs/PROTOCOL.md).
        Some(migrate::VmLocation::Unknown) => eprintln!(
            "ferry: the commit is in doubt: the source keeps the paused VM; check the destination before stopping it"
        ),
        _ => {}
    }
    Ok(status)
}

pub fn migrate(args: &MigrateArgs) -> anyhow::Result<i32> {
    let mut req = request(
        &args.to,
        &args.strategy,
        args.max_bandwidth.as_deref(),
        &args.max_downtime,
        &args.secret_file,
    )?;
    req.link_bandwidth_bps = parse_bandwidth(args.link_bandwidth.as_deref(), "--link-bandwidth")?
        .map(|b| b.bits_per_sec());
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
    match status.error {
        None => Ok(0),
        Some(e) => anyhow::bail!("{e}"),
    }
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
