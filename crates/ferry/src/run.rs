//! `ferry run` and `ferry restore`: host one VM until it ends.

use std::path::{Path, PathBuf};

use anyhow::Context;
use api::types::vm_state;
use units::ByteSize;

use node::statedir::StateDir;
use node::{HostConfig, Hosting, SerialConfig};

/// Flags of every command that hosts a VM (`run`, `restore`, `receive`).
#[derive(Debug, Clone, clap::Args)]
pub struct HostArgs {
    /// Serve the control API on this Unix socket; it answers before the
    /// guest runs (state booting, or incoming for a receiver).
    #[arg(long, value_name = "SOCKET")]
    pub api: Option<PathBuf>,
    /// The VM's identity in the API, its events and the logs: letters,
    /// digits, '.', '_' and '-', at most 64. Default: a random UUID.
    #[arg(long, value_name = "NAME", value_parser = node::check_name)]
    pub name: Option<String>,
}

impl HostArgs {
    pub fn config(&self) -> HostConfig {
        HostConfig {
            api: self.api.clone(),
            name: self.name.clone(),
        }
    }
}

/// Where serial output goes; shared by every command that runs a VM.
#[derive(Debug, Clone, clap::Args)]
pub struct SerialArgs {
    /// Write serial output to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub serial: Option<PathBuf>,
    /// Stamp each serial line with host time (seconds since the epoch).
    #[arg(long)]
    pub timestamps: bool,
}

impl SerialArgs {
    pub fn config(&self) -> SerialConfig {
        SerialConfig {
            path: self.serial.clone(),
            timestamps: self.timestamps,
            append: false,
        }
    }

    /// The sink for a guest whose TSC runs at `tsc_khz` (0 if unknown).
    pub fn sink(&self, tsc_khz: u64) -> anyhow::Result<vmm::SerialSink> {
        self.config().sink(tsc_khz)
    }
}

/// Arguments of `ferry run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Multiboot v1 kernel file (the file `qemu-system-x86_64 -kernel` boots).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "guest",
        required_unless_present_any = ["guest", "recover"]
    )]
    pub kernel: Option<PathBuf>,
    /// Built-in guest program (docs/GUESTS.md).
    #[arg(long, value_name = "NAME", value_parser = crate::guests::names())]
    pub guest: Option<String>,
    /// Where guest memory lives (a shared tmpfs file) and, during a
    /// post-copy, what a restarted `ferry run --recover` needs: one
    /// owner-only subdirectory per VM, named after it.
    #[arg(long, value_name = "DIR", default_value = node::statedir::DEFAULT_BASE)]
    pub state_dir: PathBuf,
    /// Take up the post-copy a killed `ferry run` left in DIR (its state
    /// directory, STATE_DIR/NAME): serve the destination the pages it
    /// still lacks, or resume the VM here if the destination is lost too.
    /// The VM's size, name and migration come from DIR.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["kernel", "guest"])]
    pub recover: Option<PathBuf>,
    /// Kernel command line (the guest's parameters, docs/GUESTS.md).
    #[arg(long, default_value = "", value_name = "ARGS")]
    pub append: String,
    /// Guest RAM, a size such as 512M or 1.5G (binary units, docs/UNITS.md).
    #[arg(long, default_value = "512M", value_name = "SIZE", value_parser = ByteSize::parse)]
    pub memory: ByteSize,
    /// Number of vCPUs (1-64).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(vmm::MAX_VCPUS)))]
    pub vcpus: u32,
    #[command(flatten)]
    pub host: HostArgs,
    #[command(flatten)]
    pub output: SerialArgs,
}

/// Arguments of `ferry restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Snapshot file written by `ferry ctl snapshot`.
    pub file: PathBuf,
    #[command(flatten)]
    pub host: HostArgs,
    /// Restore but leave the VM paused.
    #[arg(long)]
    pub paused: bool,
    #[command(flatten)]
    pub output: SerialArgs,
}

pub fn run(args: &RunArgs) -> anyhow::Result<i32> {
    if let Some(dir) = &args.recover {
        return recover(args, dir);
    }
    let memory_bytes = args.memory.bytes();
    let hosting = Hosting::start(&args.host.config(), vm_state::BOOTING)?;
    let state = StateDir::create(&args.state_dir, hosting.instance.id())?;
    let (image, name) = match (&args.kernel, &args.guest) {
        (Some(p), _) => (
            std::fs::read(p).with_context(|| format!("cannot read kernel {}", p.display()))?,
            p.display().to_string(),
        ),
        (None, Some(g)) => (crate::guests::image(g)?.to_vec(), g.clone()),
        (None, None) => anyhow::bail!("give --kernel FILE or --guest NAME"),
    };
    let vm = vmm::Vm::boot_in(
        &vmm::BootSpec {
            kernel: &image,
            kernel_name: name,
            cmdline: args.append.clone(),
            memory_bytes,
            vcpus: args.vcpus,
        },
        args.output.sink(0)?,
        Some(state.memory_file()),
    )?;
    hosting.instance.set_state_dir(state);
    Ok(crate::exit::of_hosting(hosting.run(vm)?))
}

/// `ferry run --recover DIR`.
fn recover(args: &RunArgs, dir: &Path) -> anyhow::Result<i32> {
    let (state, rec) = StateDir::open(dir)?;
    let mut host = args.host.config();
    host.name = host.name.or_else(|| Some(rec.name.clone()));
    let hosting = Hosting::start(&host, vm_state::BOOTING)?;
    // The killed process's output stays in the log, this one's follows.
    let serial = SerialConfig {
        append: true,
        ..args.output.config()
    };
    let vm = vmm::Vm::for_restore_in(
        &rec.config,
        serial.sink(rec.config.tsc_khz.into())?,
        Some(state.memory_file()),
    )
    .with_context(|| format!("cannot recover from {}", dir.display()))?;
    tracing::info!(
        dir = %dir.display(),
        to = %rec.request.to,
        "taking up the post-copy of a killed source"
    );
    Ok(crate::exit::of_hosting(hosting.recover(vm, state, rec)?))
}

pub fn restore(args: &RestoreArgs) -> anyhow::Result<i32> {
    let hosting = Hosting::start(&args.host.config(), vm_state::BOOTING)?;
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open snapshot {}", args.file.display()))?;
    let (vm, _) =
        vmm::snapshot::restore(file, args.output.sink(0)?, &vmstate::ReadLimits::default())
            .with_context(|| args.file.display().to_string())?;
    if !args.paused {
        vm.resume()?;
    }
    Ok(crate::exit::of_hosting(hosting.run(vm)?))
}
