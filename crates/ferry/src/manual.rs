//! What is generated from the clap definitions: shell completions
//! (`ferry completions SHELL`), man pages (`ferry man DIR`), and `ferry help
//! [COMMAND]...`.

use std::path::PathBuf;

use anyhow::Context;
use clap_complete::Shell;

/// Arguments of `ferry completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

/// Arguments of `ferry man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Folder to write ferry.1 and one page per subcommand into (created if missing).
    pub dir: PathBuf,
}

/// Arguments of `ferry help`.
#[derive(Debug, clap::Args)]
pub struct HelpArgs {
    /// The (sub)command to describe, e.g. `ctl events`; none: ferry itself.
    pub command: Vec<String>,
}

/// Prints the completion script for `args.shell` on stdout.
pub fn completions(args: &CompletionsArgs, mut cmd: clap::Command) -> anyhow::Result<i32> {
    let name = cmd.get_name().to_string();
    clap_complete::generate(args.shell, &mut cmd, name, &mut std::io::stdout());
    Ok(0)
}

/// Writes the man pages into `args.dir`.
pub fn man(args: &ManArgs, cmd: clap::Command) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    clap_mangen::generate_to(cmd, &args.dir)
        .with_context(|| format!("cannot write man pages into {}", args.dir.display()))?;
    Ok(0)
}

/// Prints the help of the named (sub)command, as `-h` does.
pub fn help(args: &HelpArgs, mut cmd: clap::Command) -> anyhow::Result<i32> {
    // Building names every subcommand's usage by its full path.
    cmd.build();
    let mut at = cmd;
    for (i, name) in args.command.iter().enumerate() {
        let Some(sub) = at.find_subcommand(name).cloned() else {
            let path = args.command[..i].join(" ");
            anyhow::bail!(
                "`ferry {path}` has no subcommand '{name}'; see `ferry help {path}`",
                path = path.trim()
            );
        };
        at = sub;
    }
    at.print_help()?;
    Ok(0)
}
