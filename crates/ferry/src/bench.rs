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

use crate::instance::Instance;

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
    /// Live migration between two Ferry processes for each workload x
    /// strategy x bandwidth, with QEMU's live migration of the same guest
    /// in the same run (when installed).
    Migrate(MigrateBenchArgs),
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
        BenchWhat::Migrate(a) => migrate_bench(a),
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
fn warm_dirtier(memory: u64, ws: u64, pattern: &str) -> anyhow::Result<Instance> {
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
    let host = Instance::new(vm);
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
        "snapshot GiB/s of data",
        "restore (ms)",
        "restore GiB/s of guest",
        "restore GiB/s of data",
    ]);
    for size in sizes {
        let memory = units::ByteSize::parse(size)?.bytes();
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
                vmm::snapshot::restore(file, Box::new(|_, _| {}), &vmstate::ReadLimits::default())?;
            restore_ms.push(ms(start.elapsed()));
            drop(vm);
        }
        let _ = std::fs::remove_file(&path);
        let gib = memory as f64 / (1u64 << 30) as f64;
        let data_gib = bytes as f64 / (1u64 << 30) as f64;
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
            format!("{:.2}", data_gib / (s / 1e3)),
            format!("{r:.0}"),
            format!("{:.2}", gib / (r / 1e3)),
            format!("{:.2}", data_gib / (r / 1e3)),
        ]);
    }
    println!(
        "Snapshot to a file (written, fsynced, renamed) and restore into a new VM, median of {reps} runs.\n"
    );
    println!("{}", t.to_markdown());
    Ok(())
}

/// Write rate over `seconds`, optionally re-arming dirty tracking every 100 ms as a migration does.
fn measure_rate(host: &Instance, seconds: f64, log_dirty: bool) -> anyhow::Result<f64> {
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

/// Arguments of `ferry bench migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateBenchArgs {
    /// Repetitions of each configuration (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Workloads by name (see `WORKLOADS` in bench.rs; `all` for every one).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "idle,static,dirty-5k,dirty-20k,hot-20k,kvstore"
    )]
    pub workloads: Vec<String>,
    /// Ferry strategies to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "stop-and-copy,xen,downtime"
    )]
    pub strategies: Vec<String>,
    /// Bandwidth caps (`unlimited` or e.g. 1Gbit, 500Mbit).
    #[arg(long, value_delimiter = ',', default_value = "1Gbit,unlimited")]
    pub bandwidths: Vec<String>,
    /// Guest RAM.
    #[arg(long, default_value = "512M")]
    pub memory: String,
    /// Downtime target (Ferry's --max-downtime, QEMU's downtime-limit).
    #[arg(long, default_value = "300ms")]
    pub max_downtime: String,
    /// Extra time the workload runs after it reached its start point.
    #[arg(long, default_value = "2s")]
    pub warmup: String,
    /// QEMU is cancelled (and counted as not converging) after this long.
    #[arg(long, default_value = "30s")]
    pub qemu_timeout: String,
    /// Do not run QEMU even when it is installed.
    #[arg(long)]
    pub no_qemu: bool,
    /// After each completed migration, wait for the guest's second
    /// self-verification on the destination (a whole round run there) and
    /// count the run as failed unless it passed.
    #[arg(long)]
    pub verify: bool,
    /// Directory for the plots, the JSON of all runs and failed runs' logs.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
}

/// A named guest workload of the migration benchmark.
#[derive(Debug, Clone, serde::Serialize)]
struct Workload {
    name: &'static str,
    guest: &'static str,
    append: &'static str,
    /// Serial line prefix that marks the workload as started (both VMMs).
    ready: &'static str,
    /// Working set in bytes written at `rate` pages/s (dirtier), so the
    /// start point is when it has been written once.
    ws: u64,
    rate: u64,
    /// Fixed time after `ready` for workloads without a paced rate.
    settle_ms: u64,
}

impl Workload {
    /// Time after `ready` until the working set has been written once.
    fn fill(&self) -> Duration {
        if self.rate == 0 {
            Duration::from_millis(self.settle_ms)
        } else {
            Duration::from_secs_f64((self.ws / 4096) as f64 / self.rate as f64)
        }
    }
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "idle",
        guest: "idle",
        append: "",
        ready: "HB ",
        ws: 0,
        rate: 0,
        settle_ms: 0,
    },
    Workload {
        name: "dirty-5k",
        guest: "dirtier",
        append: "ws=256M rate=5000 pattern=random",
        ready: "HB ",
        ws: 256 << 20,
        rate: 5000,
        settle_ms: 0,
    },
    Workload {
        name: "dirty-20k",
        guest: "dirtier",
        append: "ws=256M rate=20000 pattern=random",
        ready: "HB ",
        ws: 256 << 20,
        rate: 20000,
        settle_ms: 0,
    },
    Workload {
        name: "hot-20k",
        guest: "dirtier",
        append: "ws=256M rate=20000 pattern=hot hot=0.1 hotshare=0.9",
        ready: "HB ",
        ws: 256 << 20,
        rate: 20000,
        settle_ms: 0,
    },
    // Writes its working set as fast as it can for 3 s, then only
    // heartbeats: 256 MiB of static data, the engine's raw throughput.
    Workload {
        name: "static",
        guest: "dirtier",
        append: "ws=256M rate=0 pattern=seq phases=busy:3s,idle:1s",
        ready: "HB ",
        ws: 256 << 20,
        rate: 0,
        settle_ms: 3000,
    },
    Workload {
        name: "kvstore",
        guest: "kvstore",
        append: "keys=500000 vsize=256",
        ready: "KV ",
        ws: 0,
        rate: 0,
        settle_ms: 0,
    },
];

/// One bandwidth setting of the matrix.
#[derive(Debug, Clone)]
struct BenchBandwidth {
    label: String,
    /// For Ferry's request (`None` = unlimited).
    ferry: Option<String>,
    qemu: Option<units::Bandwidth>,
}

fn parse_bandwidth(s: &str) -> anyhow::Result<BenchBandwidth> {
    if s.eq_ignore_ascii_case("unlimited") {
        return Ok(BenchBandwidth {
            label: "unlimited".into(),
            ferry: None,
            qemu: None,
        });
    }
    let b = units::Bandwidth::parse(s).map_err(|e| anyhow::anyhow!("--bandwidths: {e}"))?;
    Ok(BenchBandwidth {
        label: s.to_string(),
        ferry: Some(s.to_string()),
        qemu: Some(b),
    })
}

/// One measured migration, Ferry's or QEMU's, as written to runs.json.
#[derive(Debug, Clone, serde::Serialize)]
struct RunRecord {
    workload: String,
    /// A Ferry strategy, or `qemu`.
    system: String,
    bandwidth: String,
    rep: usize,
    memory_bytes: u64,
    /// Completed with the VM on the destination.
    ok: bool,
    error: Option<String>,
    ferry: Option<migrate::MigrationReport>,
    qemu: Option<yardstick::QemuMigration>,
    /// With `--verify`: the destination's verification line.
    verify: Option<String>,
}

/// The numbers compared between Ferry and QEMU.
#[derive(Debug, Clone, Copy)]
struct Metrics {
    total_ms: f64,
    downtime_ms: Option<f64>,
    guest_downtime_ms: Option<f64>,
    bytes: f64,
    bytes_ratio: f64,
    rounds: f64,
    /// Wire rate of the first (bulk) round, bytes/s (Ferry only).
    round1_bytes_per_s: Option<f64>,
}

impl RunRecord {
    fn metrics(&self) -> Option<Metrics> {
        if !self.ok {
            return None;
        }
        if let Some(r) = &self.ferry {
            let r1 = r
                .per_round
                .first()
                .filter(|r| r.duration_ms > 0.0 && !r.stop_and_copy)
                .map(|r| r.bytes as f64 / (r.duration_ms / 1e3));
            return Some(Metrics {
                total_ms: r.total_time_ms,
                downtime_ms: r.downtime_ms,
                guest_downtime_ms: r.guest_downtime_ms,
                bytes: r.bytes_sent as f64,
                bytes_ratio: r.bytes_ratio,
                rounds: r.rounds as f64,
                round1_bytes_per_s: r1,
            });
        }
        self.qemu.as_ref().map(|q| Metrics {
            total_ms: q.total_time_ms,
            downtime_ms: Some(q.downtime_ms),
            guest_downtime_ms: q.guest_downtime_ms,
            bytes: q.bytes_sent as f64,
            bytes_ratio: q.bytes_per_memory,
            rounds: q.rounds as f64,
            round1_bytes_per_s: None,
        })
    }
}

/// Everything the matrix needs, checked before anything starts.
struct MigratePlan {
    reps: usize,
    workloads: Vec<Workload>,
    strategies: Vec<String>,
    bandwidths: Vec<BenchBandwidth>,
    memory: u64,
    max_downtime: Duration,
    warmup: Duration,
    qemu_timeout: Duration,
    qemu: bool,
    verify: bool,
}

fn plan(a: &MigrateBenchArgs) -> anyhow::Result<MigratePlan> {
    if a.reps == 0 {
        anyhow::bail!("--reps must be at least 1");
    }
    let mut workloads = Vec::new();
    for name in &a.workloads {
        if name == "all" {
            workloads.extend(WORKLOADS.iter().cloned());
            continue;
        }
        let w = WORKLOADS.iter().find(|w| w.name == name).ok_or_else(|| {
            let known: Vec<_> = WORKLOADS.iter().map(|w| w.name).collect();
            anyhow::anyhow!(
                "--workloads: unknown workload {name:?} (known: {}, all)",
                known.join(", ")
            )
        })?;
        workloads.push(w.clone());
    }
    for s in &a.strategies {
        s.parse::<migrate::StrategyKind>()
            .map_err(|e| anyhow::anyhow!("--strategies: {e}"))?;
    }
    let bandwidths = a
        .bandwidths
        .iter()
        .map(|b| parse_bandwidth(b))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let memory = units::ByteSize::parse(&a.memory)
        .map_err(|e| anyhow::anyhow!("--memory: {e}"))?
        .bytes();
    // The working set plus room for the guest's own tables and the kernel.
    let need = workloads.iter().map(|w| w.ws).max().unwrap_or(0) + (64 << 20);
    if memory < need.max(128 << 20) {
        anyhow::bail!(
            "--memory: {} is too small for the chosen workloads (at least {} MiB)",
            a.memory,
            need.max(128 << 20) >> 20
        );
    }
    let dur = |flag: &str, s: &str| {
        units::parse_duration(s).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
    };
    let max_downtime = dur("max-downtime", &a.max_downtime)?;
    if max_downtime.is_zero() {
        anyhow::bail!("--max-downtime must be more than 0");
    }
    let warmup = dur("warmup", &a.warmup)?;
    let qemu_timeout = dur("qemu-timeout", &a.qemu_timeout)?;
    if workloads.is_empty() || a.strategies.is_empty() || bandwidths.is_empty() {
        anyhow::bail!("--workloads, --strategies and --bandwidths need at least one value each");
    }
    let qemu = !a.no_qemu
        && yardstick::qemu::qemu_version(std::path::Path::new("qemu-system-x86_64")).is_ok();
    Ok(MigratePlan {
        reps: a.reps,
        workloads,
        strategies: a.strategies.clone(),
        bandwidths,
        memory,
        max_downtime,
        warmup,
        qemu_timeout,
        qemu,
        verify: a.verify,
    })
}

/// One Ferry migration in `dir`: boot, wait for the start point, migrate.
fn ferry_run(
    dir: &std::path::Path,
    w: &Workload,
    strategy: &str,
    bw: &BenchBandwidth,
    p: &MigratePlan,
) -> anyhow::Result<(migrate::MigrationReport, Option<String>, Option<String>)> {
    use crate::pair::{GuestSpec, MigrationSpec, Pair};
    let mut pair = Pair::start(
        dir,
        &GuestSpec {
            guest: w.guest.into(),
            memory: format!("{}K", p.memory >> 10),
            vcpus: 1,
            append: w.append.into(),
        },
    )?;
    pair.wait_line_after(&pair.src_log, 0.0, w.ready, Duration::from_secs(60))?;
    std::thread::sleep(w.fill() + p.warmup);
    // The API answers with the guest's counters: the source is serving.
    pair.wait_source("the source's control API", |_| true)?;
    let spec = MigrationSpec {
        strategy: strategy.into(),
        max_bandwidth: bw.ferry.clone(),
        max_downtime: format!("{}ms", p.max_downtime.as_millis()),
    };
    let (report, error) = pair.migrate(&spec, false)?;
    let verify = if p.verify && error.is_none() {
        Some(second_verify(|after| {
            pair.wait_line_after(&pair.dst_log, after, "VERIFY", VERIFY_TIMEOUT)
                .map(|l| (l, after_line_time(&pair.dst_log, after)))
        })?)
    } else {
        None
    };
    pair.shutdown();
    Ok((report, error, verify))
}

/// How long to wait for each verification line on the destination.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// Host time of the first `VERIFY` line at or after `after` in a stamped log.
fn after_line_time(log: &std::path::Path, after: f64) -> f64 {
    crate::serial::read_stamped_log(log)
        .ok()
        .and_then(|lines| {
            lines
                .iter()
                .find(|l| l.time >= after && l.text.starts_with("VERIFY"))
                .map(|l| l.time)
        })
        .unwrap_or(after)
}

/// The second `VERIFY` line after now: the first may have read part of the
/// memory on the source; the second is a whole round on the destination.
/// `next(after)` returns the first such line at or after `after` and its time.
fn second_verify(
    mut next: impl FnMut(f64) -> anyhow::Result<(String, f64)>,
) -> anyhow::Result<String> {
    let (_, t) = next(crate::pair::now())?;
    Ok(next(t + 1e-6)?.0)
}

/// One QEMU migration of the same guest, start point and parameters.
fn qemu_run(
    w: &Workload,
    bw: &BenchBandwidth,
    p: &MigratePlan,
) -> anyhow::Result<(yardstick::QemuMigration, Option<String>)> {
    let mut setup = yardstick::guests::guest_config(w.guest, w.append)?;
    setup.config.memory_mib = p.memory >> 20;
    setup.config.vcpus = 1;
    let params = yardstick::MigrationParams {
        max_bandwidth: bw.qemu,
        downtime_limit_ms: p.max_downtime.as_millis() as u64,
        timeout: p.qemu_timeout,
        ..Default::default()
    };
    let ready = w.ready;
    let mut run = yardstick::migrate_guest_after(
        &setup.config,
        &params,
        &format!("a {ready:?} line"),
        |l| l.text.starts_with(ready),
        w.fill() + p.warmup,
    )?;
    let verify = if p.verify && run.report.outcome == yardstick::QemuOutcome::Completed {
        let dst = &mut run.destination;
        Some(second_verify(|after| {
            let (_, l) = dst.wait_for_line(0, VERIFY_TIMEOUT, "a VERIFY line", |l| {
                l.text.starts_with("VERIFY") && l.time >= after
            })?;
            Ok((l.text, l.time))
        })?)
    } else {
        None
    };
    Ok((run.report, verify))
}

fn migrate_bench(a: &MigrateBenchArgs) -> anyhow::Result<()> {
    let p = plan(a)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create --out {}", a.out.display()))?;
    if !a.no_qemu && !p.qemu {
        eprintln!("bench migrate: qemu-system-x86_64 is not installed; Ferry only");
    }
    let systems: Vec<String> = p
        .strategies
        .iter()
        .cloned()
        .chain(p.qemu.then(|| "qemu".to_string()))
        .collect();
    let total = p.reps * p.bandwidths.len() * p.workloads.len() * systems.len();
    let started_at = now_utc();
    let mut records: Vec<RunRecord> = Vec::new();
    let mut n = 0;
    // Repetitions outermost, so slow drifts of the machine's load hit every
    // configuration alike.
    for rep in 0..p.reps {
        for bw in &p.bandwidths {
            for w in &p.workloads {
                for sys in &systems {
                    n += 1;
                    eprint!(
                        "bench migrate: run {n}/{total}: {} {sys} {} rep {}/{} ... ",
                        w.name,
                        bw.label,
                        rep + 1,
                        p.reps
                    );
                    let mut rec = RunRecord {
                        workload: w.name.into(),
                        system: sys.clone(),
                        bandwidth: bw.label.clone(),
                        rep,
                        memory_bytes: p.memory,
                        ok: false,
                        error: None,
                        ferry: None,
                        qemu: None,
                        verify: None,
                    };
                    let dir = a.out.join("runs").join(format!(
                        "{n:03}-{}-{sys}-{}",
                        w.name,
                        bw.label.replace('/', "_")
                    ));
                    if sys == "qemu" {
                        match qemu_run(w, bw, &p) {
                            Ok((q, verify)) => {
                                rec.verify = verify;
                                rec.ok = q.outcome == yardstick::QemuOutcome::Completed;
                                if !rec.ok {
                                    rec.error = Some(match q.outcome {
                                        yardstick::QemuOutcome::TimedOut => {
                                            format!("did not converge within {:?}", p.qemu_timeout)
                                        }
                                        o => format!(
                                            "{o:?}: {}",
                                            q.error.clone().unwrap_or_default()
                                        ),
                                    });
                                }
                                rec.qemu = Some(q);
                            }
                            Err(e) => rec.error = Some(format!("{e:#}")),
                        }
                    } else {
                        match ferry_run(&dir, w, sys, bw, &p) {
                            Ok((r, err, verify)) => {
                                rec.verify = verify;
                                rec.ok = err.is_none() && r.outcome == migrate::Outcome::Completed;
                                rec.error =
                                    err.or_else(|| (!rec.ok).then(|| r.outcome.to_string()));
                                rec.ferry = Some(r);
                            }
                            Err(e) => rec.error = Some(format!("{e:#}")),
                        }
                    }
                    if let Some(v) = &rec.verify
                        && !v.starts_with("VERIFY ok")
                    {
                        rec.ok = false;
                        rec.error = Some(format!("integrity check on the destination: {v}"));
                    }
                    match (rec.metrics(), &rec.error) {
                        (Some(m), _) => eprintln!(
                            "{:.0} ms, downtime {}, guest {}, {}",
                            m.total_ms,
                            opt_ms(m.downtime_ms),
                            opt_ms(m.guest_downtime_ms),
                            units::format_bytes(m.bytes as u64)
                        ),
                        (None, e) => eprintln!("FAILED: {}", e.as_deref().unwrap_or("?")),
                    }
                    // Keep the logs of failed Ferry runs only.
                    if rec.ok {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    records.push(rec);
                    write_json(&a.out, &p, &started_at, &records)?;
                }
            }
        }
    }
    let report = migrate_tables(&p, &records, &systems);
    println!("{report}");
    plots(&a.out, &p, &records, &systems)?;
    eprintln!(
        "bench migrate: raw runs in {}, plots in {}",
        a.out.join("runs.json").display(),
        a.out.display()
    );
    Ok(())
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn write_json(
    out: &std::path::Path,
    p: &MigratePlan,
    started: &str,
    records: &[RunRecord],
) -> anyhow::Result<()> {
    let doc = serde_json::json!({
        "started": started,
        "memory_bytes": p.memory,
        "max_downtime_ms": p.max_downtime.as_millis() as u64,
        "warmup_ms": p.warmup.as_millis() as u64,
        "qemu_timeout_ms": p.qemu_timeout.as_millis() as u64,
        "verify": p.verify,
        "workloads": p.workloads,
        "runs": records,
    });
    let path = out.join("runs.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0} ms"))
}

/// Medians over the successful runs of one cell, and how many succeeded.
struct Cell {
    ok: usize,
    runs: usize,
    total_ms: Option<f64>,
    downtime_ms: Option<f64>,
    guest_downtime_ms: Option<f64>,
    bytes: Option<f64>,
    bytes_ratio: Option<f64>,
    rounds: Option<f64>,
    round1: Option<f64>,
    first_error: Option<String>,
}

fn cell(records: &[RunRecord], workload: &str, system: &str, bw: &str) -> Cell {
    let runs: Vec<&RunRecord> = records
        .iter()
        .filter(|r| r.workload == workload && r.system == system && r.bandwidth == bw)
        .collect();
    let m: Vec<Metrics> = runs.iter().filter_map(|r| r.metrics()).collect();
    let med = |f: &dyn Fn(&Metrics) -> Option<f64>| {
        let v: Vec<f64> = m.iter().filter_map(f).collect();
        median(&v)
    };
    Cell {
        ok: m.len(),
        runs: runs.len(),
        total_ms: med(&|m| Some(m.total_ms)),
        downtime_ms: med(&|m| m.downtime_ms),
        guest_downtime_ms: med(&|m| m.guest_downtime_ms),
        bytes: med(&|m| Some(m.bytes)),
        bytes_ratio: med(&|m| Some(m.bytes_ratio)),
        rounds: med(&|m| Some(m.rounds)),
        round1: med(&|m| m.round1_bytes_per_s),
        first_error: runs.iter().find_map(|r| r.error.clone()),
    }
}

fn fmt_opt(v: Option<f64>, p: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.p$}"))
}

fn fmt_bytes_cell(c: &Cell) -> String {
    match (c.bytes, c.bytes_ratio) {
        (Some(b), Some(r)) => format!("{:.0} MiB ({r:.2}x)", b / (1u64 << 20) as f64),
        _ => "-".into(),
    }
}

fn ratio_opt(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => ratio(a, b),
        _ => "-".into(),
    }
}

/// Markdown: one table per bandwidth, plus the failures.
fn migrate_tables(p: &MigratePlan, records: &[RunRecord], systems: &[String]) -> String {
    let mut out = String::new();
    let strategies: Vec<&String> = systems.iter().filter(|s| *s != "qemu").collect();
    for bw in &p.bandwidths {
        let mut head = vec![
            "workload",
            "strategy",
            "ok",
            "total ms",
            "downtime ms",
            "guest downtime ms",
            "bytes (x memory)",
            "rounds",
            "round-1 GB/s",
        ];
        if p.qemu {
            head.extend([
                "QEMU ok",
                "QEMU total ms",
                "QEMU downtime ms",
                "QEMU guest downtime ms",
                "QEMU bytes (x memory)",
                "QEMU rounds",
                "total F/Q",
                "downtime F/Q",
                "guest downtime F/Q",
                "bytes F/Q",
            ]);
        }
        let mut t = Table::new(head);
        for w in &p.workloads {
            let q = cell(records, w.name, "qemu", &bw.label);
            for s in &strategies {
                let c = cell(records, w.name, s, &bw.label);
                let mut row = vec![
                    w.name.to_string(),
                    s.to_string(),
                    format!("{}/{}", c.ok, c.runs),
                    fmt_opt(c.total_ms, 0),
                    fmt_opt(c.downtime_ms, 1),
                    fmt_opt(c.guest_downtime_ms, 1),
                    fmt_bytes_cell(&c),
                    fmt_opt(c.rounds, 0),
                    fmt_opt(c.round1.map(|b| b / 1e9), 2),
                ];
                if p.qemu {
                    let q_ok = match &q.first_error {
                        Some(e) if e.contains("converge") => {
                            format!("{}/{} (no convergence)", q.ok, q.runs)
                        }
                        _ => format!("{}/{}", q.ok, q.runs),
                    };
                    row.extend([
                        q_ok,
                        fmt_opt(q.total_ms, 0),
                        fmt_opt(q.downtime_ms, 1),
                        fmt_opt(q.guest_downtime_ms, 1),
                        fmt_bytes_cell(&q),
                        fmt_opt(q.rounds, 0),
                        ratio_opt(c.total_ms, q.total_ms),
                        ratio_opt(c.downtime_ms, q.downtime_ms),
                        ratio_opt(c.guest_downtime_ms, q.guest_downtime_ms),
                        ratio_opt(c.bytes, q.bytes),
                    ]);
                }
                t.row(row);
            }
        }
        out.push_str(&format!(
            "### Bandwidth {}\n\nMedians of the successful runs out of {} ({} guest, 1 vCPU, downtime target {} ms); `ok` = completed runs out of all; F/Q = Ferry/QEMU.\n\n{}\n",
            bw.label,
            p.reps,
            units::format_bytes(p.memory),
            p.max_downtime.as_millis(),
            t.to_markdown()
        ));
        if p.verify {
            out.push_str("Each completed run counts only if the guest's second self-verification on the destination passed (`--verify`).\n\n");
        }
    }
    let failures: Vec<&RunRecord> = records.iter().filter(|r| !r.ok).collect();
    if !failures.is_empty() {
        out.push_str("### Failed or non-converging runs\n\n");
        for r in failures {
            out.push_str(&format!(
                "- {} {} {} rep {}: {}\n",
                r.workload,
                r.system,
                r.bandwidth,
                r.rep + 1,
                r.error.as_deref().unwrap_or("?")
            ));
        }
    }
    out
}

/// Grouped bar plots per bandwidth: workloads x (strategies + QEMU).
fn plots(
    out: &std::path::Path,
    p: &MigratePlan,
    records: &[RunRecord],
    systems: &[String],
) -> anyhow::Result<()> {
    let categories: Vec<String> = p.workloads.iter().map(|w| w.name.to_string()).collect();
    type Pick = fn(&Cell) -> Option<f64>;
    let metrics: [(&str, &str, Pick); 3] = [
        ("guest-downtime", "guest-visible downtime (ms)", |c| {
            c.guest_downtime_ms
        }),
        ("total-time", "total migration time (ms)", |c| c.total_ms),
        ("bytes", "bytes on the wire (MiB)", |c| {
            c.bytes.map(|b| b / (1u64 << 20) as f64)
        }),
    ];
    for bw in &p.bandwidths {
        for (file, label, pick) in metrics {
            let series: Vec<yardstick::plot::Series> = systems
                .iter()
                .map(|s| yardstick::plot::Series {
                    name: if s == "qemu" {
                        "QEMU".into()
                    } else {
                        format!("Ferry {s}")
                    },
                    values: p
                        .workloads
                        .iter()
                        .map(|w| pick(&cell(records, w.name, s, &bw.label)).unwrap_or(0.0))
                        .collect(),
                })
                .collect();
            let svg = yardstick::plot::grouped_bars_svg(
                &format!("{label}, {} (median; 0 = no completed run)", bw.label),
                label,
                &categories,
                &series,
            )?;
            let name = format!("migrate-{file}-{}.svg", bw.label.replace('/', "_"));
            yardstick::plot::save(&out.join(name), &svg)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> MigrateBenchArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: MigrateBenchArgs,
        }
        let argv = std::iter::once("bench").chain(extra.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).unwrap().a
    }

    fn err(extra: &[&str]) -> String {
        plan(&args(extra)).err().unwrap().to_string()
    }

    #[test]
    fn bad_flags_are_refused_before_anything_runs() {
        assert!(err(&["--workloads", "idle,nope"]).contains("\"nope\""));
        assert!(err(&["--strategies", "yolo"]).contains("yolo"));
        assert!(err(&["--bandwidths", "fast"]).contains("--bandwidths"));
        assert!(err(&["--memory", "256M"]).contains("too small"));
        assert!(err(&["--reps", "0"]).contains("--reps"));
        assert!(err(&["--warmup", "soon"]).contains("--warmup"));
        assert!(err(&["--max-downtime", "0ms"]).contains("--max-downtime"));
    }

    #[test]
    fn defaults_cover_the_matrix() {
        let p = plan(&args(&["--no-qemu"])).unwrap();
        assert_eq!(p.reps, 3);
        assert_eq!(p.workloads.len(), WORKLOADS.len());
        assert_eq!(p.strategies, migrate::STRATEGIES);
        assert_eq!(p.memory, 512 << 20);
        assert!(!p.qemu);
        let bw: Vec<_> = p
            .bandwidths
            .iter()
            .map(|b| (b.ferry.clone(), b.qemu))
            .collect();
        assert_eq!(
            bw,
            [
                (
                    Some("1Gbit".into()),
                    units::Bandwidth::from_bits_per_sec(1_000_000_000)
                ),
                (None, None)
            ]
        );
        let all = plan(&args(&["--no-qemu", "--workloads", "all"])).unwrap();
        assert_eq!(all.workloads.len(), WORKLOADS.len());
    }

    #[test]
    fn start_point_is_the_time_to_write_the_working_set_once() {
        let w = |n: &str| WORKLOADS.iter().find(|w| w.name == n).unwrap().fill();
        assert_eq!(w("idle"), Duration::ZERO);
        assert_eq!(w("static"), Duration::from_secs(3));
        // 65,536 pages at 20,000 pages/s.
        assert_eq!(w("dirty-20k"), Duration::from_secs_f64(3.2768));
    }

    fn ferry_record(rep: usize, ok: bool, total: f64, bytes: u64) -> RunRecord {
        let r: migrate::MigrationReport = serde_json::from_value(serde_json::json!({
            "strategy": "downtime", "outcome": if ok { "completed" } else { "failed: boom" },
            "vm_location": "destination", "total_time_ms": total, "downtime_ms": 10.0,
            "guest_downtime_ms": 20.0, "bytes_sent": bytes, "memory_bytes": 1000u64,
            "bytes_ratio": bytes as f64 / 1000.0, "rounds": 2, "pages_resent": 0,
            "pages_sent": 0, "zero_pages": 0, "max_bandwidth_bps": null,
            "max_downtime_ms": 300.0, "pause_ms": null, "per_round": []
        }))
        .unwrap();
        RunRecord {
            workload: "idle".into(),
            system: "downtime".into(),
            bandwidth: "unlimited".into(),
            rep,
            memory_bytes: 1000,
            ok,
            error: (!ok).then(|| "boom".to_string()),
            ferry: Some(r),
            qemu: None,
            verify: None,
        }
    }

    #[test]
    fn medians_use_completed_runs_and_failures_are_listed() {
        let records = vec![
            ferry_record(0, true, 100.0, 500),
            ferry_record(1, false, 1.0, 1),
            ferry_record(2, true, 300.0, 700),
        ];
        let c = cell(&records, "idle", "downtime", "unlimited");
        assert_eq!((c.ok, c.runs), (2, 3));
        assert_eq!(c.total_ms, Some(200.0));
        assert_eq!(c.bytes, Some(600.0));
        assert_eq!(c.first_error.as_deref(), Some("boom"));
        let mut p = plan(&args(&["--no-qemu", "--workloads", "idle"])).unwrap();
        p.bandwidths.retain(|b| b.label == "unlimited");
        let md = migrate_tables(&p, &records, &["downtime".to_string()]);
        assert!(md.contains("| 2/3 "), "{md}");
        assert!(md.contains("idle downtime unlimited rep 2: boom"), "{md}");
    }
}
