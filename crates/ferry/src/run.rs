//! `ferry run`: boot a guest and run it until it exits.

use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `ferry run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Multiboot v1 kernel file (the file `qemu-system-x86_64 -kernel` boots).
    #[arg(long, conflicts_with = "guest", required_unless_present = "guest")]
    pub kernel: Option<PathBuf>,
    /// Built-in guest program: dirtier, idle or kvstore.
    #[arg(long)]
    pub guest: Option<String>,
    /// Kernel command line (the guest's parameters).
    #[arg(long, default_value = "")]
    pub append: String,
    /// Guest RAM, e.g. 512M or 1G.
    #[arg(long, default_value = "512M")]
    pub memory: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u32,
    /// Write serial output to this file instead of stdout.
    #[arg(long)]
    pub serial: Option<PathBuf>,
    /// Stamp each serial line with host time.
    #[arg(long)]
    pub timestamps: bool,
}

pub fn run(args: &RunArgs) -> anyhow::Result<i32> {
    let memory_bytes = vmm::memory::parse_size(&args.memory).map_err(anyhow::Error::msg)?;
    let (image, name) = match (&args.kernel, &args.guest) {
        (Some(p), _) => (
            std::fs::read(p).with_context(|| format!("cannot read kernel {}", p.display()))?,
            p.display().to_string(),
        ),
        (None, Some(g)) => anyhow::bail!("unknown guest program {g:?}"),
        (None, None) => anyhow::bail!("give --kernel FILE or --guest NAME"),
    };
    let sink = crate::serial::sink(args.serial.as_deref(), args.timestamps)?;
    let vm = vmm::Vm::boot(
        &vmm::BootSpec {
            kernel: &image,
            kernel_name: name,
            cmdline: args.append.clone(),
            memory_bytes,
            vcpus: args.vcpus,
        },
        sink,
    )?;
    match vm.wait(None) {
        Some(vmm::ExitReason::Guest(code)) => Ok(code),
        Some(vmm::ExitReason::Crashed(msg)) => anyhow::bail!("{msg}"),
        Some(vmm::ExitReason::Stopped) | None => Ok(0),
    }
}
