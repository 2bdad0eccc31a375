//! `ferry ctl`: talk to a running Ferry process through its API socket,
//! one verb per route (`ferry migrate` alone starts migrations).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use api::Client;
use api::routes;
use serde_json::json;

use api::types::MigrationStatus;

/// Arguments of `ferry ctl`.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// API socket of the `ferry run`/`restore`/`receive` process.
    #[arg(long, value_name = "SOCKET")]
    pub api: PathBuf,
    /// First wait up to TIME (e.g. 5s) for the socket to answer, for a
    /// process just started.
    #[arg(long, value_name = "TIME", value_parser = parse_wait)]
    pub wait: Option<Duration>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

fn parse_wait(s: &str) -> Result<Duration, String> {
    units::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Show the VM's id, state, memory, vCPUs and latest guest counters (JSON).
    Status,
    /// Pause every vCPU.
    Pause,
    /// Resume a paused VM.
    Resume,
    /// Write a snapshot of the VM to FILE (the VM is paused meanwhile).
    Snapshot {
        /// The snapshot file to write (replaced atomically if it exists).
        file: PathBuf,
    },
    /// Stop the VM and end its process (a migration before Commit is rolled
    /// back first).
    Shutdown,
    /// Follow the migration this process runs until it is done, then print
    /// its report.
    MigrateStatus {
        /// Print the current status once, as JSON, and return.
        #[arg(long)]
        once: bool,
        /// Print the final report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel the running migration: it rolls back and the VM keeps running
    /// here (too late once Commit is sent).
    MigrateCancel,
    /// Print the VM's events as they happen, one JSON object per line,
    /// until its process ends.
    Events,
    /// Check that the process answers (prints its pid and VM id).
    Ping,
    /// Print the versions of the process, its API and formats.
    Version,
    /// Switch the running migration to post-copy now: the VM resumes on
    /// the destination and the pages left follow on demand (docs/MIGRATION.md).
    MigratePostcopy,
}

pub fn run(args: &CtlArgs) -> anyhow::Result<i32> {
    let client = Client::new(&args.api);
    if let Some(within) = args.wait {
        client.wait_ready(within)?;
    }
    let (status, body) = match &args.command {
        CtlCommand::Status => client.get(routes::VM)?,
        CtlCommand::Pause => client.put(routes::VM_PAUSE, None)?,
        CtlCommand::Resume => client.put(routes::VM_RESUME, None)?,
        CtlCommand::Shutdown => client.put(routes::VM_SHUTDOWN, None)?,
        CtlCommand::MigratePostcopy => client.put(routes::VM_MIGRATE_POSTCOPY, None)?,
        CtlCommand::Snapshot { file } => {
            let path = std::path::absolute(file)?;
            client.put(
                routes::VM_SNAPSHOT,
                Some(&json!({ "path": path.display().to_string() })),
            )?
        }
        CtlCommand::MigrateStatus { once: true, .. } => client.get(routes::VM_MIGRATE)?,
        CtlCommand::MigrateStatus { once: false, json } => return migrate_status(&client, *json),
        CtlCommand::MigrateCancel => client.put(routes::VM_MIGRATE_CANCEL, None)?,
        CtlCommand::Events => return events(&client),
        CtlCommand::Ping => client.get(routes::PING)?,
        CtlCommand::Version => client.get(routes::VERSION)?,
    };
    api_result(status, body)
}

/// Follows the migration to its end; fails as the migration did.
fn migrate_status(client: &Client, json: bool) -> anyhow::Result<i32> {
    // One answer first, so "none started" is an error line, not a wait.
    let first: MigrationStatus = serde_json::from_value(client.get_ok(routes::VM_MIGRATE)?)?;
    let status = if first.done {
        first
    } else {
        crate::live::follow(client, !json)?
    };
    crate::live::print_report(status.report.as_ref(), json)?;
    match status.error {
        None => Ok(0),
        Some(e) => anyhow::bail!("migration {} failed: {e}", status.id),
    }
}

/// Prints each event line as it comes, until the stream ends.
fn events(client: &Client) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    for line in client.stream(routes::EVENTS)? {
        let value = line?;
        if writeln!(out, "{value}").and_then(|()| out.flush()).is_err() {
            break; // the reader went away (e.g. `| head`)
        }
    }
    Ok(0)
}

/// Prints an API answer; an error status becomes an error naming it.
fn api_result(status: u16, body: serde_json::Value) -> anyhow::Result<i32> {
    if status >= 400 {
        let msg = body
            .get("error")
            .and_then(|e| e.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        anyhow::bail!("{msg} (HTTP {status})");
    }
    if !body.is_null() {
        println!("{}", serde_json::to_string_pretty(&body)?);
    }
    Ok(0)
}
