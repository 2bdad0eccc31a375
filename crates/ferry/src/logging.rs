//! Logs: `tracing` events, shown by a `tracing-subscriber` on stderr or in
//! a file, as text or JSON lines. `RUST_LOG` (env-filter syntax) wins over
//! `-v`/`-q`. Results stay on stdout and the one final error line on
//! stderr; logs are what happened on the way (docs/LOGGING.md).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Crates whose logs `-v`/`-q` adjust; others log warnings only.
const OURS: [&str; 9] = [
    "ferry", "node", "agent", "store", "hostmon", "migrate", "vmm", "api", "sim",
];

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
