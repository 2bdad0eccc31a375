//! How long one decision takes for a live cluster of 1,000 hosts and 5,000
//! VMs (issue target: at most 50 ms per interval). The pool is synthetic but
//! shaped like the paper's: two host kinds (HP ML110 G4/G5), the four
//! EC2-like VM types, loads following seeded random walks, a tenth of the
//! hosts packed into hotspots and a tenth nearly idle, so that every interval
//! has hotspots to relieve and coldspots to empty. Each policy decides
//! `INTERVALS` intervals in a row (histories advance, cooldowns apply);
//! reported: median and worst wall time per decision, and migrations.
//!
//! Run: `cargo bench -p cluster --bench decide`.

use std::time::Instant;

use cluster::{
    Config, Detector, HostInfo, Manager, MigrationLimits, Model, Pattern, PoolView, PowerModel,
    Selector, VmInfo,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const HOSTS: usize = 1_000;
const VMS: usize = 5_000;
const INTERVALS: usize = 12;
const TARGET_MS: f64 = 50.0;
/// (MIPS, RAM MB) of the paper's VM types.
const VM_TYPES: [(f64, f64); 4] = [
    (2500.0, 870.0),
    (2000.0, 1740.0),
    (1000.0, 1740.0),
    (500.0, 613.0),
];

fn pool(rng: &mut ChaCha8Rng) -> PoolView {
    let hosts = (0..HOSTS)
        .map(|i| {
            let mips = if i % 2 == 0 { 1860.0 } else { 2660.0 };
            HostInfo {
                id: i as u64,
                cpu_capacity: 2.0 * mips,
                core_capacity: mips,
                ram_mb: 8192.0,
                net_mbps: 1000.0,
                cpu_overhead: 0.0,
                power_model: i % 2,
                on: true,
            }
        })
        .collect();
    let vms = (0..VMS)
        .map(|v| {
            let (size, ram) = VM_TYPES[v % VM_TYPES.len()];
            // Hosts 10k get busy VMs, hosts 10k+1 idle ones.
            let host = v % HOSTS;
            let level: f64 = match host % 10 {
                0 => rng.random_range(0.6..0.95),
                1 => rng.random_range(0.0..0.05),
                _ => rng.random_range(0.05..0.4),
            };
            let history: Vec<f64> = (0..cluster::HISTORY_LEN)
                .map(|_| (level + rng.random_range(-0.05..0.05)).clamp(0.0, 1.0))
                .collect();
            VmInfo {
                id: v as u64,
                host,
                cpu_size: size,
                cores: 1,
                cpu_demand: size * history[history.len() - 1],
                ram_mb: ram,
                net_mbps: 0.0,
                history,
                migrating_to: None,
                dirty_rate_mb_s: None,
            }
        })
        .collect();
    PoolView {
        time_s: 0.0,
        interval_s: 300.0,
        migration_bw_share: 0.5,
        default_bandwidth_mbps: 1000.0,
        power_models: vec![PowerModel::hp_ml110_g4(), PowerModel::hp_ml110_g5()],
        hosts,
        vms,
    }
}

/// The next interval: each VM's load takes a random step; the plan is
/// applied as if its migrations finished within the interval.
fn advance(view: &mut PoolView, plan: &cluster::Plan, rng: &mut ChaCha8Rng) {
    view.time_s += view.interval_s;
    for m in &plan.migrations {
        view.vms[m.vm].host = m.to;
    }
    for &h in &plan.switch_on {
        view.hosts[h].on = true;
    }
    for &h in &plan.switch_off {
        view.hosts[h].on = false;
    }
    for vm in &mut view.vms {
        let last = vm.history[vm.history.len() - 1];
        let next = (last + rng.random_range(-0.05..0.05)).clamp(0.0, 1.0);
        vm.history.remove(0);
        vm.history.push(next);
        vm.cpu_demand = vm.cpu_size * next;
    }
}

fn main() {
    let policies = [
        ("thr-mmt-0.8", Detector::Threshold { threshold: 0.8 }),
        (
            "mad-mmt-2.5",
            Detector::Mad {
                safety: 2.5,
                fallback: 0.8,
            },
        ),
        (
            "lr-mmt-1.2",
            Detector::Lr {
                safety: 1.2,
                fallback: 0.8,
            },
        ),
    ];
    println!(
        "decide: {HOSTS} hosts, {VMS} VMs, {INTERVALS} intervals per policy, consolidate pattern, one thread"
    );
    println!("| policy | median ms | worst ms | migrations per interval | target |");
    println!("|---|---|---|---|---|");
    for (name, detector) in policies {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut view = pool(&mut rng);
        let config = Config {
            detector,
            selector: Selector::MinMigrationTime,
            pattern: Pattern::Consolidate,
            coldspot_below: None,
            limits: MigrationLimits::default(),
            model: Model::Ferry,
            tie_tolerance_w: 0.0,
        };
        let mut manager = Manager::new(config, 1).expect("valid configuration");
        let mut times = Vec::new();
        let mut moves = 0;
        for _ in 0..INTERVALS {
            let t = Instant::now();
            let plan = manager.decide(&view).expect("valid pool");
            times.push(t.elapsed().as_secs_f64() * 1e3);
            moves += plan.migrations.len();
            advance(&mut view, &plan, &mut rng);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let worst = times[times.len() - 1];
        println!(
            "| {name} | {median:.2} | {worst:.2} | {:.0} | {} |",
            moves as f64 / INTERVALS as f64,
            if worst <= TARGET_MS { "met" } else { "missed" }
        );
    }
}
