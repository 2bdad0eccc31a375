//! The scale runs: day 20110303 replicated k times (its trace files copied
//! with a prefix) on the default scenario with both host counts multiplied
//! by k (800, 4,000 and 16,000 hosts), one policy on one thread, with
//! exact ties (the default: a scan of every candidate below 2,000 hosts,
//! the load buckets from there) and with a tie tolerance (the host index)
//! in turn at each size. Reports each run's CPU time (median of 3), its
//! ratio to k = 1 in the same mode (measured in the same process, so load
//! on the machine affects both), the peak memory, and plots time against
//! hosts.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sim::{Policy, RunSpec, Scenario};

const DAY: &str = "20110303";
const FACTORS: [usize; 3] = [1, 5, 20];
const REPS: usize = 3;
const POLICIES: [&str; 2] = ["lr-mmt-1.2", "thr-mmt-0.8"];
/// The tie tolerance of the indexed runs (`tie_tolerance_w`).
const TOLERANCE_W: f64 = 1e-6;

/// A folder with one day: `day` replicated `k` times.
fn replicate(src: &Path, k: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-sim-scale-{}-{k}", std::process::id()));
    let day = dir.join(format!("{DAY}x{k}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&day).expect("temporary folder");
    for entry in std::fs::read_dir(src.join(DAY)).expect("day folder") {
        let entry = entry.expect("entry");
        for i in 0..k {
            let name = format!("{i:02}_{}", entry.file_name().to_string_lossy());
            std::fs::copy(entry.path(), day.join(name)).expect("copy");
        }
    }
    dir
}

/// Peak resident memory of this process, KiB (VmHWM).
fn peak_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

/// One size in one mode: (CPU s median, wall s median, VMs).
fn measure(spec: &RunSpec) -> (f64, f64, usize) {
    let mut cpu = Vec::new();
    let mut wall = Vec::new();
    let mut vms = 0;
    for _ in 0..REPS {
        let c = crate::cpu_time();
        let t = Instant::now();
        let r = sim::run(spec).expect("simulation runs");
        wall.push(t.elapsed().as_secs_f64());
        if let (Some(a), Some(b)) = (c, crate::cpu_time()) {
            cpu.push((b - a).as_secs_f64());
        }
        vms = r.days[0].vms;
        std::hint::black_box(r);
    }
    cpu.sort_by(f64::total_cmp);
    wall.sort_by(f64::total_cmp);
    let c = cpu.get(cpu.len() / 2).copied().unwrap_or(f64::NAN);
    (c, wall[wall.len() / 2], vms)
}

pub fn run(trace_dir: &Path) {
    println!(
        "scale: day {DAY} replicated k times on k x 800 hosts, 1 thread; \
         exact ties and a {TOLERANCE_W} W tie tolerance side by side"
    );
    let mut lines: Vec<yardstick::plot::Polyline> = Vec::new();
    for policy in POLICIES {
        let mut points = [Vec::new(), Vec::new()];
        let mut base = [None, None];
        for k in FACTORS {
            let dir = replicate(trace_dir, k);
            let mut loaded = Scenario::builtin();
            for t in loaded.scenario.host_types.iter_mut() {
                t.count *= k;
            }
            let hosts = loaded.scenario.host_count();
            for (mode, tolerance) in [0.0, TOLERANCE_W].into_iter().enumerate() {
                let mut loaded = loaded.clone();
                loaded.scenario.manager.tie_tolerance_w = tolerance;
                let spec = RunSpec {
                    loaded,
                    trace_dir: dir.clone(),
                    policies: vec![policy.parse::<Policy>().expect("known policy")],
                    seed: 1,
                    threads: 1,
                    progress: false,
                };
                let (c, w, vms) = measure(&spec);
                let b = *base[mode].get_or_insert(c);
                println!(
                    "{policy:<12} tie {tolerance:<6} W {hosts:>6} hosts {vms:>6} VMs: CPU {c:>8.2} s (x{:>6.1} of k=1), wall {w:>8.2} s, peak {} MiB",
                    c / b,
                    peak_kib().map_or("n/a".into(), |p| (p / 1024).to_string())
                );
                points[mode].push((hosts as f64, c));
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        let [exact, tolerant] = points;
        lines.push(yardstick::plot::Polyline {
            name: format!("{policy}, exact ties"),
            points: exact,
        });
        lines.push(yardstick::plot::Polyline {
            name: format!("{policy}, {TOLERANCE_W} W tie tolerance"),
            points: tolerant,
        });
    }
    let svg = yardstick::plot::lines_svg(
        "ferry sim: one day, one thread",
        "hosts (VMs = 1.315 x hosts)",
        "CPU seconds",
        &lines,
    )
    .expect("plot");
    // Cargo runs benches in the package's folder: the plot goes to the
    // target folder's tmp, which Cargo creates for benches.
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sim-scale.svg");
    match yardstick::plot::save(&out, &svg) {
        Ok(()) => println!("plot: {}", out.display()),
        Err(e) => println!("plot not written: {e}"),
    }
}
