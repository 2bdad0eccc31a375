//! The guest programs built into Ferry.

use std::path::PathBuf;

/// The image of built-in guest `name`, or an error listing the choices.
pub fn image(name: &str) -> anyhow::Result<&'static [u8]> {
    guest::image(name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown guest program {name:?} (built-in guests: {})",
            guest::NAMES.join(", ")
        )
    })
}

/// Arguments of `ferry guest`.
#[derive(Debug, clap::Args)]
pub struct GuestArgs {
    #[command(subcommand)]
    pub command: GuestCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum GuestCommand {
    /// List the built-in guest programs.
    List,
    /// Write a built-in guest's Multiboot image to FILE (for QEMU's -kernel).
    Export { name: String, file: PathBuf },
}

pub fn run(args: &GuestArgs) -> anyhow::Result<i32> {
    match &args.command {
        GuestCommand::List => {
            for n in guest::NAMES {
                println!("{n}");
            }
        }
        GuestCommand::Export { name, file } => {
            std::fs::write(file, image(name)?)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
        }
    }
    Ok(0)
}
