//! `ferry`: run, checkpoint and live-migrate VMs; simulate a data center.

mod run;
mod serial;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Live migration of virtual machines on KVM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a Multiboot kernel (or a built-in guest program) on KVM.
    Run(run::RunArgs),
    /// Simulate a data center driven by CPU traces, with a migration policy.
    Sim(sim::cli::SimArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(args) => run::run(args),
        Command::Sim(args) => sim::cli::run(args).map(|()| 0),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ferry: error: {e:#}");
            std::process::exit(1);
        }
    }
}
