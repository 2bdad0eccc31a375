//! `ferry bench`: measurements with medians of several runs, QEMU side by
//! side where it applies. Results are printed as Markdown tables for
//! docs/BENCHMARKS.md.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use yardstick::bench::{median, ratio};
use yardstick::table::Table;

use crate::host::Host;

/// Arguments of `ferry bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchWhat {
    /// Time from starting the VMM to the guest's first heartbeat, Ferry and QEMU.
    Boot {
        #[arg(long, default_value_t = 5)]
        reps: usize,
    },
    /// Snapshot and restore throughput of guests with a 25% written working set.
    Snapshot {
        /// Guest sizes to measure.
        #[arg(long, value_delimiter = ',', default_value = "1G,4G")]
        sizes: Vec<String>,
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Directory for the snapshot files.
        #[arg(long, default_value = "/tmp")]
        dir: PathBuf,
    },
    /// The dirtier's achieved write rate with dirty logging off and on.
    DirtyRate {
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Seconds each measurement lasts.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
}

pub fn run(args: &BenchArgs) -> anyhow::Result<i32> {
    match &args.what {
        BenchWhat::Boot { reps } => boot(*reps),
        BenchWhat::Snapshot { sizes, reps, dir } => snapshot(sizes, *reps, dir),
        BenchWhat::DirtyRate { reps, seconds } => dirty_rate(*reps, *seconds),
    }?;
    Ok(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Spawns `ferry run --guest idle` and times its first heartbeat on stdout.
fn ferry_boot_once() -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let start = Instant::now();
    let mut child = Command::new(exe)
        .args(["run", "--guest", "idle", "--memory", "256M"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start ferry run")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut found = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line.starts_with("HB ") {
            found = Some(ms(start.elapsed()));
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    found.context("ferry run ended before the first heartbeat")
}

fn boot(reps: usize) -> anyhow::Result<()> {
    let image = yardstick::ImageFile::new("idle.elf", crate::guests::image("idle")?)?;
    let mut cfg = yardstick::QemuConfig::new(image.path());
    cfg.memory_mib = 256;
    let (mut f, mut q) = (Vec::new(), Vec::new());
    for i in 0..reps {
        eprintln!("boot: run {}/{reps}", i + 1);
        f.push(ferry_boot_once()?);
        q.push(yardstick::measure_boot(&cfg, Duration::from_secs(20))?.first_heartbeat_ms);
    }
    let (fm, qm) = (median(&f).unwrap_or(0.0), median(&q).unwrap_or(0.0));
    let mut t = Table::new([
        "guest",
        "Ferry first heartbeat (ms)",
        "QEMU first heartbeat (ms)",
        "Ferry/QEMU",
    ]);
    t.row([
        "idle, 256 MiB, 1 vCPU".to_string(),
        format!("{fm:.1}"),
        format!("{qm:.1}"),
        ratio(fm, qm),
    ]);
    println!(
        "Time from starting the VMM process to the guest's first heartbeat, median of {reps} runs.\n"
    );
    println!("{}", t.to_markdown());
    Ok(())
}

/// Boots a dirtier and waits until it has written its whole working set once.
fn warm_dirtier(memory: u64, ws: u64, pattern: &str) -> anyhow::Result<Host> {
    let cmdline = format!(
        "ws={}K pattern={pattern} rate=0 hb=10ms verify=3600s",
        ws >> 10
    );
    let vm = vmm::Vm::boot(
        &vmm::BootSpec {
            kernel: crate::guests::image("dirtier")?,
            kernel_name: "dirtier".into(),
            cmdline,
            memory_bytes: memory,
            vcpus: 1,
        },
        Box::new(|_, _| {}),
    )?;
    let host = Host::new(vm);
    let pages = ws / 4096;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(c) = host.guest_counters()
            && c.pages_written >= pages
        {
            return Ok(host);
        }
        if Instant::now() > deadline {
            anyhow::bail!("the dirtier did not write its working set within 10 minutes");
        }
        if let vmm::RunState::Exited(r) = host.vm.run_state() {
            anyhow::bail!("the dirtier ended early: {r:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn snapshot(sizes: &[String], reps: usize, dir: &std::path::Path) -> anyhow::Result<()> {
    let mut t = Table::new([
        "guest",
        "written",
        "snapshot size",
        "snapshot (ms)",
        "snapshot GiB/s of guest",
        "restore (ms)",
        "restore GiB/s of guest",
    ]);
    for size in sizes {
        let memory = vmm::memory::parse_size(size).map_err(anyhow::Error::msg)?;
        let ws = memory / 4;
        eprintln!(
            "snapshot: booting a {size} dirtier and writing {} MiB",
            ws >> 20
        );
        let host = warm_dirtier(memory, ws, "seq")?;
        let path = dir.join(format!("ferry-bench-{size}.snap"));
        let (mut save_ms, mut restore_ms, mut bytes) = (Vec::new(), Vec::new(), 0);
        for i in 0..reps {
            eprintln!("snapshot: {size} run {}/{reps}", i + 1);
            let d = host.snapshot(&path)?;
            save_ms.push(d.duration_ms);
            bytes = d.bytes;
            let start = Instant::now();
            let file = std::fs::File::open(&path)?;
            let (vm, _) =
                vmm::snapshot::restore(file, Box::new(|_, _| {}), &vmstate::Limits::default())?;
            restore_ms.push(ms(start.elapsed()));
            drop(vm);
        }
        let _ = std::fs::remove_file(&path);
        let gib = memory as f64 / (1u64 << 30) as f64;
        let (s, r) = (
            median(&save_ms).unwrap_or(0.0),
            median(&restore_ms).unwrap_or(0.0),
        );
        t.row([
            size.clone(),
            format!("{} MiB", ws >> 20),
            format!("{} MiB", bytes >> 20),
            format!("{s:.0}"),
            format!("{:.2}", gib / (s / 1e3)),
            format!("{r:.0}"),
            format!("{:.2}", gib / (r / 1e3)),
        ]);
    }
    println!(
        "Snapshot to a file (written, fsynced, renamed) and restore into a new VM, median of {reps} runs.\n"
    );
    println!("{}", t.to_markdown());
    Ok(())
}

/// Write rate over `seconds`, optionally re-arming dirty tracking every 100 ms as a migration does.
fn measure_rate(host: &Host, seconds: f64, log_dirty: bool) -> anyhow::Result<f64> {
    let regions = host.vm.config().regions.len();
    let mut bitmaps = vec![Vec::new(); regions];
    if log_dirty {
        host.vm.start_dirty_log()?;
        host.vm.harvest_dirty(&mut bitmaps)?;
    }
    let before = host
        .guest_counters()
        .context("no guest counters")?
        .pages_written;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        std::thread::sleep(Duration::from_millis(100));
        if log_dirty {
            host.vm.harvest_dirty(&mut bitmaps)?;
        }
    }
    let after = host
        .guest_counters()
        .context("no guest counters")?
        .pages_written;
    let elapsed = start.elapsed().as_secs_f64();
    if log_dirty {
        host.vm.stop_dirty_log()?;
    }
    Ok((after - before) as f64 / elapsed)
}

fn dirty_rate(reps: usize, seconds: f64) -> anyhow::Result<()> {
    let mut t = Table::new([
        "pattern",
        "logging off (pages/s)",
        "logging on (pages/s)",
        "on/off",
    ]);
    for pattern in ["seq", "random"] {
        let host = warm_dirtier(512 << 20, 64 << 20, pattern)?;
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for i in 0..reps {
            eprintln!("dirty-rate: {pattern} run {}/{reps}", i + 1);
            off.push(measure_rate(&host, seconds, false)?);
            on.push(measure_rate(&host, seconds, true)?);
        }
        let (a, b) = (median(&off).unwrap_or(0.0), median(&on).unwrap_or(0.0));
        t.row([
            pattern.to_string(),
            format!("{a:.0}"),
            format!("{b:.0}"),
            ratio(b, a),
        ]);
    }
    println!(
        "Dirtier write rate (64 MiB working set, unpaced), median of {reps} runs of {seconds} s; with logging on, the log is harvested and re-armed every 100 ms.\n"
    );
    println!("{}", t.to_markdown());
    Ok(())
}
