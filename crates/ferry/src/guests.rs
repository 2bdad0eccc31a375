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

/// The built-in guest names, as a clap value parser (docs/GUESTS.md).
pub fn names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(guest::NAMES)
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
    Export {
        /// The built-in guest program.
        #[arg(value_parser = names())]
        name: String,
        /// Where to write the image (a Multiboot v1 ELF file).
        file: PathBuf,
    },
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
