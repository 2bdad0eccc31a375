//! `ferry ctl`: talk to a running Ferry process through its API socket.

use std::path::PathBuf;

use api::Client;
use api::routes;
use serde_json::json;

/// Arguments of `ferry ctl`.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// API socket of the `ferry run`/`ferry restore` process.
    #[arg(long, value_name = "SOCKET")]
    pub api: PathBuf,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Show state, memory, vCPUs and the guest's latest counters (JSON).
    Status,
    /// Pause every vCPU.
    Pause,
    /// Resume a paused VM.
    Resume,
    /// Write a snapshot of the VM to FILE (the VM is paused meanwhile).
    Snapshot {
        /// The snapshot file to write (`ferry restore FILE` starts it again).
        file: PathBuf,
    },
    /// Stop the VM and end its process.
    Shutdown,
}

pub fn run(args: &CtlArgs) -> anyhow::Result<i32> {
    let client = Client::new(&args.api);
    let (status, body) = match &args.command {
        CtlCommand::Status => client.get(routes::VM)?,
        CtlCommand::Pause => client.put(routes::VM_PAUSE, None)?,
        CtlCommand::Resume => client.put(routes::VM_RESUME, None)?,
        CtlCommand::Shutdown => client.put(routes::VM_SHUTDOWN, None)?,
        CtlCommand::Snapshot { file } => {
            let path = std::path::absolute(file)?;
            client.put(
                routes::VM_SNAPSHOT,
                Some(&json!({ "path": path.display().to_string() })),
            )?
        }
    };
    api_result(status, body)
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
