//! `ferry run` and `ferry restore`: host one VM until it ends.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use units::ByteSize;

use crate::instance::Instance;

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
    /// The sink for a guest whose TSC runs at `tsc_khz` (0 if unknown).
    pub fn sink(&self, tsc_khz: u64) -> anyhow::Result<vmm::SerialSink> {
        crate::serial::sink(self.serial.as_deref(), self.timestamps, tsc_khz)
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
        required_unless_present = "guest"
    )]
    pub kernel: Option<PathBuf>,
    /// Built-in guest program (docs/GUESTS.md).
    #[arg(long, value_name = "NAME", value_parser = crate::guests::names())]
    pub guest: Option<String>,
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
    /// Serve the control API on this Unix socket.
    #[arg(long, value_name = "SOCKET")]
    pub api: Option<PathBuf>,
    #[command(flatten)]
    pub output: SerialArgs,
}

/// Arguments of `ferry restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// Snapshot file written by `ferry ctl snapshot`.
    pub file: PathBuf,
    /// Serve the control API on this Unix socket.
    #[arg(long, value_name = "SOCKET")]
    pub api: Option<PathBuf>,
    /// Restore but leave the VM paused.
    #[arg(long)]
    pub paused: bool,
    #[command(flatten)]
    pub output: SerialArgs,
}

pub fn run(args: &RunArgs) -> anyhow::Result<i32> {
    let memory_bytes = args.memory.bytes();
    let (image, name) = match (&args.kernel, &args.guest) {
        (Some(p), _) => (
            std::fs::read(p).with_context(|| format!("cannot read kernel {}", p.display()))?,
            p.display().to_string(),
        ),
        (None, Some(g)) => (crate::guests::image(g)?.to_vec(), g.clone()),
        (None, None) => anyhow::bail!("give --kernel FILE or --guest NAME"),
    };
    let vm = vmm::Vm::boot(
        &vmm::BootSpec {
            kernel: &image,
            kernel_name: name,
            cmdline: args.append.clone(),
            memory_bytes,
            vcpus: args.vcpus,
        },
        args.output.sink(0)?,
    )?;
    serve(Instance::new(vm), args.api.as_deref())
}

pub fn restore(args: &RestoreArgs) -> anyhow::Result<i32> {
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open snapshot {}", args.file.display()))?;
    let (vm, _) =
        vmm::snapshot::restore(file, args.output.sink(0)?, &vmstate::ReadLimits::default())
            .with_context(|| args.file.display().to_string())?;
    if !args.paused {
        vm.resume()?;
    }
    serve(Instance::new(vm), args.api.as_deref())
}

/// Runs the VM (and its API) until it ends; returns the process exit status.
pub fn serve(host: Instance, api: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let host = Arc::new(host);
    let _server = match api {
        Some(path) => Some(crate::control::start(host.clone(), path)?),
        None => None,
    };
    let reason = loop {
        if let Some(r) = host.vm.wait(Some(std::time::Duration::from_millis(200))) {
            break r;
        }
    };
    match reason {
        vmm::ExitReason::Guest(code) => Ok(code),
        vmm::ExitReason::Crashed(msg) => anyhow::bail!("{msg}"),
        vmm::ExitReason::Stopped => Ok(crate::exit::OK),
        vmm::ExitReason::Migrated => {
            // The VM was retired when Commit went out; the job ends once the
            // destination acknowledged (or the acknowledgement was lost).
            let job = host.migration();
            while job.as_ref().is_some_and(|j| j.running()) {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let status = job.map(|j| j.status());
            let to = status.as_ref().map(|s| s.to.clone()).unwrap_or_default();
            let in_doubt = status
                .as_ref()
                .and_then(|s| s.report.as_ref())
                .is_none_or(|r| r.vm_location != migrate::VmLocation::Destination);
            if in_doubt {
                // The retired VM's memory may be the only copy: keep it until
                // an operator who checked the destination says otherwise.
                eprintln!(
                    "ferry: the commit to {to} is in doubt; keeping the stopped VM until `ferry ctl shutdown`"
                );
                while !host.shutdown_requested() {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                eprintln!("ferry: shut down by the operator; the VM's memory here is released");
                return Ok(crate::exit::IN_DOUBT);
            }
            // Keep answering the API until the migrating client has read the
            // report and asked us to exit, or for a minute at most.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !host.shutdown_requested() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            eprintln!("ferry: the VM migrated to {to}; exiting");
            Ok(crate::exit::OK)
        }
    }
}
