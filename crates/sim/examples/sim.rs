//! `ferry sim` without the rest of Ferry: `cargo run -p sim --release --example sim -- --help`.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "sim",
    about = "Simulate a data center driven by CPU traces, with a migration policy"
)]
struct Cli {
    #[command(flatten)]
    args: sim::cli::SimArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = sim::cli::run(&cli.args) {
        eprintln!("sim: error: {e:#}");
        std::process::exit(1);
    }
}
