//! `ferry`: run, checkpoint and live-migrate VMs; simulate a data center.

mod agent;
mod bench;
mod ctl;
mod demo;
mod downtime;
mod exit;
mod flags;
mod guests;
mod live;
mod local_cluster;
mod logging;
mod manager;
mod manual;
mod pair;
mod pki;
mod run;
mod serial;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Live migration of virtual machines on KVM",
    disable_help_subcommand = true
)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
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
    /// Run this host's agent: own, measure and publish its VMs (docs/CLUSTER.md).
    Agent(agent::AgentArgs),
    /// A cluster on one machine: hosts as network namespaces, agents, VMs and a manager (docs/CLUSTER.md).
    Cluster(local_cluster::ClusterArgs),
    /// Run a migration manager: elected leader, it decides and orders the agents' migrations (docs/CLUSTER.md).
    Manager(manager::ManagerArgs),
    /// Create the cluster's TLS certificates: a CA and one certificate per host.
    Pki(pki::PkiArgs),
    /// Measure Ferry (and QEMU beside it): boot, snapshot, dirty rate, migration.
    Bench(bench::BenchArgs),
    /// Simulate a data center driven by CPU traces, with a migration policy.
    Sim(sim::cli::SimArgs),
    /// Print a shell completion script (e.g. `ferry completions bash > /etc/bash_completion.d/ferry`).
    Completions(manual::CompletionsArgs),
    /// Write man pages for ferry and each subcommand into a folder.
    Man(manual::ManArgs),
    /// Describe ferry or one of its subcommands (`ferry help ctl events`).
    Help(manual::HelpArgs),
}

fn main() {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        // Help and version go to stdout with 0; usage errors to stderr.
        let _ = e.print();
        std::process::exit(if e.use_stderr() {
            exit::USAGE
        } else {
            exit::OK
        });
    });
    if let Err(e) = logging::init(&cli.log) {
        eprintln!("ferry: error: {}", error_line(&e));
        std::process::exit(exit::FAILED);
    }
    let result = match &cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Run(args) => run::run(args),
        Command::Restore(args) => run::restore(args),
        Command::Receive(args) => live::receive(args),
        Command::Migrate(args) => live::migrate(args),
        Command::Guest(args) => guests::run(args),
        Command::Ctl(args) => ctl::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Manager(args) => manager::run(args),
        Command::Pki(args) => pki::run(args),
        Command::Cluster(args) => local_cluster::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Sim(args) => sim::cli::run(args).map(|()| exit::OK),
        Command::Completions(args) => manual::completions(args, Cli::command()),
        Command::Man(args) => manual::man(args, Cli::command()),
        Command::Help(args) => manual::help(args, Cli::command()),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ferry: error: {}", error_line(&e));
            std::process::exit(exit::of_error(&e));
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every subcommand, with the path to it.
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for a in cmd.get_arguments() {
            out.push((format!("{path} {}", a.get_id()), a.clone()));
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_argument_and_subcommand_has_help() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut args = Vec::new();
        walk(&cli, "ferry", &mut args);
        let missing: Vec<_> = args
            .iter()
            .filter(|(_, a)| !matches!(a.get_id().as_str(), "help" | "version"))
            .filter(|(_, a)| a.get_help().is_none() && a.get_long_help().is_none())
            .map(|(p, _)| p.clone())
            .collect();
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
        fn subs(cmd: &clap::Command, out: &mut Vec<String>) {
            for s in cmd.get_subcommands() {
                if s.get_about().is_none() && s.get_name() != "help" {
                    out.push(s.get_name().to_string());
                }
                subs(s, out);
            }
        }
        let mut bare = Vec::new();
        subs(&cli, &mut bare);
        assert!(bare.is_empty(), "subcommands without help: {bare:?}");
    }

    #[test]
    fn usage_errors_exit_with_the_documented_status() {
        for argv in [
            &[
                "ferry",
                "receive",
                "--listen",
                "x",
                "--secret-file",
                "s",
                "--max-memory",
                "0",
            ][..],
            &["ferry", "run", "--guest", "idle", "--vcpus", "0"][..],
            &["ferry", "run", "--guest", "idle", "--memory", "1GB"][..],
            &["ferry", "bench", "boot", "--reps", "0"][..],
            &["ferry", "sim", "--threads", "0"][..],
        ] {
            let e = Cli::try_parse_from(argv).err().expect("refused");
            assert_eq!(e.exit_code(), exit::USAGE, "{argv:?}");
            assert!(e.use_stderr());
        }
    }
}
