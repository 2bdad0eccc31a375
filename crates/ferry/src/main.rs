//! `ferry`: run, checkpoint and live-migrate VMs; simulate a data center.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ferry", version, about = "Live migration of virtual machines on KVM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a data center driven by CPU traces, with a migration policy.
    Sim(sim::cli::SimArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Sim(args) => sim::cli::run(args),
    };
    if let Err(e) = result {
        eprintln!("ferry: error: {e:#}");
        std::process::exit(1);
    }
}
