//! Logs: `tracing` events, shown by a `tracing-subscriber` on stderr or in
//! a file, as text or JSON lines. `RUST_LOG` (env-filter syntax) wins over
//! `-v`/`-q`. Results stay on stdout and the one final error line on
//! stderr; logs are what happened on the way (docs/LOGGING.md).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use api::events::{Event, EventKind};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Crates whose logs `-v`/`-q` adjust; others log warnings only.
const OURS: [&str; 5] = ["ferry", "migrate", "vmm", "api", "sim"];

/// Log flags, accepted by every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// More log detail: -v debug, -vv trace (RUST_LOG, when set, wins).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less: -q warnings only, -qq errors only.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
    /// Append logs to FILE instead of writing them on stderr.
    #[arg(long, value_name = "FILE", global = true)]
    pub log_file: Option<PathBuf>,
    /// Log format: text (for people) or json (one object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogArgs {
    /// The filter: RUST_LOG if set, else our crates at the chosen level.
    fn filter(&self) -> anyhow::Result<EnvFilter> {
        if let Ok(spec) = std::env::var(EnvFilter::DEFAULT_ENV)
            && !spec.trim().is_empty()
        {
            return EnvFilter::try_new(&spec).context("RUST_LOG is not a valid log filter");
        }
        let level = match (self.verbose, self.quiet) {
            (0, 0) => "info",
            (1, _) => "debug",
            (v, _) if v > 1 => "trace",
            (_, 1) => "warn",
            _ => "error",
        };
        let mut spec = String::from("warn");
        for c in OURS {
            spec.push_str(&format!(",{c}={level}"));
        }
        Ok(EnvFilter::try_new(spec)?)
    }
}

/// Installs the subscriber for this process.
pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let filter = args.filter()?;
    let (writer, ansi) = match &args.log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("--log-file: cannot open {}", path.display()))?;
            (BoxMakeWriter::new(file), false)
        }
        None => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let installed = match args.log_format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// Logs a VM or migration event once, with the VM's and the migration's
/// identity as fields; failures at warn, the rest at info.
pub fn event(e: &Event) {
    let what = describe(&e.kind);
    let kind = e.kind.name();
    let warn = matches!(
        e.kind,
        EventKind::MigrationRolledBack { .. }
            | EventKind::MigrationInDoubt { .. }
            | EventKind::MigrationInterrupted { .. }
            | EventKind::VmStopped { error: Some(_), .. }
    );
    match (e.kind.migration(), warn) {
        (Some(m), false) => tracing::info!(vm = %e.vm, migration = %m, event = kind, "{what}"),
        (Some(m), true) => tracing::warn!(vm = %e.vm, migration = %m, event = kind, "{what}"),
        (None, false) => tracing::info!(vm = %e.vm, event = kind, "{what}"),
        (None, true) => tracing::warn!(vm = %e.vm, event = kind, "{what}"),
    }
}

/// The event in words.
fn describe(kind: &EventKind) -> String {
    match kind {
        EventKind::VmCreated { state } => format!("VM created, {state}; the API answers"),
        EventKind::VmStarted { state } => format!("VM started, {state}"),
        EventKind::VmPaused { cause } => format!("VM paused ({})", cause_name(*cause)),
        EventKind::VmResumed { cause } => format!("VM resumed ({})", cause_name(*cause)),
        EventKind::VmStopped {
            reason,
            exit_status,
            error,
        } => match (exit_status, error) {
            (Some(code), _) => format!("VM stopped: {reason}, exit status {code}"),
            (_, Some(why)) => format!("VM stopped: {reason}: {why}"),
            _ => format!("VM stopped: {reason}"),
        },
        EventKind::MigrationStarted { to, strategy, .. } => {
            format!("migration to {to} started (strategy {strategy})")
        }
        EventKind::MigrationPhase { phase, .. } => format!("migration phase {phase}"),
        EventKind::MigrationRound { round: r, .. } => format!(
            "migration round {}{}: {} of {} pending pages sent, {} in {}, {} dirtied",
            r.round,
            if r.stop_and_copy { " (VM paused)" } else { "" },
            r.pages_sent,
            r.pages_pending,
            units::format_bytes(r.bytes),
            units::format_duration(std::time::Duration::from_secs_f64(
                r.duration_ms.max(0.0) / 1e3
            )),
            r.pages_dirtied
        ),
        EventKind::MigrationCompleted {
            to, downtime_ms, ..
        } => match downtime_ms {
            Some(d) => format!("migration completed: the VM runs on {to} (downtime {d:.1} ms)"),
            None => format!("migration completed: the VM runs on {to}"),
        },
        EventKind::MigrationRolledBack {
            cancelled, error, ..
        } => {
            if *cancelled {
                "migration cancelled and rolled back: the VM runs here".to_string()
            } else {
                format!("migration rolled back, the VM runs here: {error}")
            }
        }
        EventKind::MigrationInDoubt { error, .. } => format!(
            "migration in doubt, the VM is kept stopped here until `ferry ctl shutdown`: {error}"
        ),
        EventKind::MigrationInterrupted { error, .. } => format!(
            "post-copy interrupted, the VM runs nowhere; its stopped copy is kept here until `ferry ctl shutdown`: {error}"
        ),
        EventKind::MigrationReceived { from, .. } => format!(
            "VM received by live migration from {}",
            from.as_deref().unwrap_or("?")
        ),
        EventKind::EventsLost { count } => format!("{count} events lost"),
    }
}

fn cause_name(c: api::events::Cause) -> &'static str {
    match c {
        api::events::Cause::Operator => "by the operator",
        api::events::Cause::Snapshot => "for a snapshot",
        api::events::Cause::Migration => "by the migration",
        api::events::Cause::Lease => "by the post-copy lease",
    }
}
