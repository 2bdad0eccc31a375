//! `ferry sim` command line.

/// Arguments of `ferry sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {}

/// Runs `ferry sim`.
pub fn run(_args: &SimArgs) -> anyhow::Result<()> {
    anyhow::bail!("ferry sim is not implemented yet")
}
