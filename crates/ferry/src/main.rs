//! `ferry`: run, checkpoint and live-migrate VMs; simulate a data center.

mod adapter;
mod bench;
mod control;
mod ctl;
mod demo;
mod downtime;
mod guests;
mod instance;
mod live;
mod migration;
mod pair;
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
    /// Live-migrate a running guest between two Ferry processes on this machine, with a report.
    Demo(demo::DemoArgs),
    /// Boot a Multiboot kernel (or a built-in guest program) on KVM.
    Run(run::RunArgs),
    /// Start a VM from a snapshot file; the guest continues where it stopped.
    Restore(run::RestoreArgs),
    /// Wait for one incoming live migration, then run the VM.
    Receive(live::ReceiveArgs),
    /// Live-migrate the VM of a `ferry run` process to a `ferry receive`.
    Migrate(live::MigrateArgs),
    /// List or export the built-in guest programs.
    Guest(guests::GuestArgs),
    /// Control a running VM through its API socket.
    Ctl(ctl::CtlArgs),
    /// Measure Ferry (and QEMU beside it): boot, snapshot, dirty rate, migration.
    Bench(bench::BenchArgs),
    /// Simulate a data center driven by CPU traces, with a migration policy.
    Sim(sim::cli::SimArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Run(args) => run::run(args),
        Command::Restore(args) => run::restore(args),
        Command::Receive(args) => live::receive(args),
        Command::Migrate(args) => live::migrate(args),
        Command::Guest(args) => guests::run(args),
        Command::Ctl(args) => ctl::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Sim(args) => sim::cli::run(args).map(|()| 0),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ferry: error: {}", error_line(&e));
            std::process::exit(1);
        }
    }
}

/// The error and its causes on one line, each message once (many causes
/// already repeat their source's message).
fn error_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if out.contains(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}
