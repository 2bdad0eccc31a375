//! Measures QEMU on one guest image: boot to first heartbeat, and live
//! migration on loopback, each repeated, with medians.
//!
//! ```text
//! cargo run --release -p yardstick --example qemu_bench -- \
//!     [--guest NAME | --kernel FILE] [--append ARGS] [--memory MIB] [--vcpus N] [--reps N] \
//!     [--bandwidth RATE|unlimited]... [--downtime MS] [--warmup MS] \
//!     [--seabios] [--json] [--plot DIR]
//! ```
//! `--guest` takes one of Ferry's guest programs (dirtier, idle, kvstore);
//! a dirtier is migrated once it has written its whole working set (a
//! `VERIFY ok ... gen>=2`). Without `--guest` or `--kernel` it uses the
//! crate's tiny heartbeat test kernel.

use std::path::PathBuf;
use std::time::Duration;

use units::{Bandwidth, format_bytes};
use yardstick::bench::Stats;
use yardstick::migration::{MigrationParams, QemuMigration};
use yardstick::plot::{rounds_svg, save};
use yardstick::qemu::{Firmware, ImageFile, QemuConfig, measure_boot};
use yardstick::table::Table;
use yardstick::testkernel::heartbeat_kernel;

struct Args {
    guest: Option<String>,
    kernel: Option<PathBuf>,
    append: String,
    memory: u64,
    vcpus: u32,
    reps: usize,
    bandwidths: Vec<Option<Bandwidth>>,
    downtime: u64,
    warmup: u64,
    seabios: bool,
    json: bool,
    plot: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        guest: None,
        kernel: None,
        append: String::new(),
        memory: 256,
        vcpus: 1,
        reps: 3,
        bandwidths: Vec::new(),
        downtime: 300,
        warmup: 1000,
        seabios: false,
        json: false,
        plot: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--kernel" => a.kernel = Some(val()?.into()),
            "--guest" => a.guest = Some(val()?),
            "--append" => a.append = val()?,
            "--memory" => a.memory = val()?.parse().map_err(|e| format!("--memory: {e}"))?,
            "--vcpus" => a.vcpus = val()?.parse().map_err(|e| format!("--vcpus: {e}"))?,
            "--reps" => a.reps = val()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--downtime" => a.downtime = val()?.parse().map_err(|e| format!("--downtime: {e}"))?,
            "--warmup" => a.warmup = val()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--bandwidth" => {
                let v = val()?;
                a.bandwidths.push(if v == "unlimited" {
                    None
                } else {
                    Some(Bandwidth::parse(&v).map_err(|e| format!("--bandwidth: {e}"))?)
                });
            }
            "--seabios" => a.seabios = true,
            "--json" => a.json = true,
            "--plot" => a.plot = Some(val()?.into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    if a.bandwidths.is_empty() {
        a.bandwidths = vec![Bandwidth::from_bits_per_sec(1_000_000_000), None];
    }
    Ok(a)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("qemu_bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let _image;
    let _setup;
    let mut cfg = match (&args.guest, &args.kernel) {
        (Some(name), _) => {
            _setup = yardstick::guests::guest_config(name, &args.append)?;
            _setup.config.clone()
        }
        (None, Some(k)) => QemuConfig::new(k.clone()),
        (None, None) => {
            _image = ImageFile::new("heartbeat.bin", &heartbeat_kernel(None))?;
            QemuConfig::new(_image.path())
        }
    };
    cfg.append = args.append.clone();
    cfg.memory_mib = args.memory;
    cfg.vcpus = args.vcpus;
    if args.seabios {
        cfg.firmware = Firmware::SeaBios;
    }

    let boots =
        yardstick::bench::repeat(args.reps, |_| measure_boot(&cfg, Duration::from_secs(60)))?;
    let hb: Vec<f64> = boots.iter().map(|b| b.first_heartbeat_ms).collect();
    let first: Vec<f64> = boots.iter().map(|b| b.first_line_ms).collect();
    let mut t = Table::new(["measure", "median ms", "min..max, n"]);
    for (name, v) in [("first serial line", &first), ("first heartbeat", &hb)] {
        let s = Stats::of(v).ok_or("no boot measurements")?;
        t.row([name.to_string(), format!("{:.1}", s.median), format!("{s}")]);
    }
    println!(
        "QEMU boot ({:?} firmware, {}, {} vCPU)\n{}",
        cfg.firmware,
        format_bytes(cfg.memory_mib << 20),
        cfg.vcpus,
        t.to_markdown()
    );

    let mut t = Table::new([
        "bandwidth",
        "outcome",
        "total ms",
        "downtime ms",
        "guest downtime ms",
        "sent",
        "sent/mem",
        "rounds",
    ]);
    let mut all: Vec<QemuMigration> = Vec::new();
    for cap in &args.bandwidths {
        let bw = cap.map_or("unlimited".to_string(), |b| b.to_string());
        let params = MigrationParams {
            max_bandwidth: *cap,
            downtime_limit_ms: args.downtime,
            ..MigrationParams::default()
        };
        let runs = yardstick::bench::repeat(args.reps, |_| {
            yardstick::migrate_guest_after(
                &cfg,
                &params,
                "the guest to be ready",
                |l| {
                    if args.guest.as_deref() == Some("dirtier") {
                        // A full pass over the working set is done.
                        l.text.starts_with("VERIFY ok")
                            && l.text.split_whitespace().any(|w| {
                                w.strip_prefix("gen=").and_then(|g| g.parse::<u64>().ok())
                                    >= Some(2)
                            })
                    } else {
                        yardstick::serial::is_heartbeat(l)
                    }
                },
                Duration::from_millis(args.warmup),
            )
            .map(|r| r.report)
        })?;
        let med = |f: &dyn Fn(&QemuMigration) -> f64| {
            yardstick::bench::median(&runs.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        let outcomes: Vec<String> = runs.iter().map(|r| format!("{:?}", r.outcome)).collect();
        t.row([
            bw.clone(),
            outcomes.join(","),
            format!("{:.0}", med(&|r| r.total_time_ms)),
            format!("{:.0}", med(&|r| r.downtime_ms)),
            format!("{:.1}", med(&|r| r.heartbeat_gap_ms.unwrap_or(f64::NAN))),
            format_bytes(med(&|r| r.bytes_sent as f64) as u64),
            format!("{:.2}", med(&|r| r.bytes_per_memory)),
            format!("{:.0}", med(&|r| r.rounds as f64)),
        ]);
        if let (Some(dir), Some(first)) = (&args.plot, runs.first())
            && !first.per_round.is_empty()
        {
            let name = format!("qemu-rounds-{}.svg", bw.replace(['/', ' '], "_"));
            save(
                &dir.join(name),
                &rounds_svg(&format!("QEMU migration, {bw}"), &first.per_round)?,
            )?;
        }
        all.extend(runs);
    }
    println!(
        "QEMU live migration (medians of {}, downtime-limit {} ms)\n{}",
        args.reps,
        args.downtime,
        t.to_markdown()
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(())
}
