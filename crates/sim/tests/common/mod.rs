//! What the simulator's integration tests share: temporary trace folders,
//! the tiny hand-computed scenario, a run spec.
#![allow(dead_code)]

use std::path::Path;

use sim::{Policy, RunSpec, Scenario};
use testkit::TempDir;

pub fn write_trace(dir: &Path, day: &str, name: &str, values: &[u32]) {
    let d = dir.join(day);
    std::fs::create_dir_all(&d).unwrap();
    let text: String = values.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(d.join(name), text).unwrap();
}

/// Two 1-core hosts of 1000 MIPS drawing 100 W idle to 200 W full (linear),
/// VMs of 1000 MIPS and 625 MB (a migration takes 625 / 62.5 = 10 s), three
/// 300-s intervals.
pub const TINY: &str = r#"
[simulation]
interval_s = 300.0
samples_per_day = 3
policies = ["thr-mmt-0.8"]

[[host_type]]
name = "tiny"
count = 2
cores = 1
mips_per_core = 1000.0
ram_mb = 4096.0
bandwidth_mbps = 1000.0
power_watts = [100.0, 200.0]

[[vm_type]]
name = "one"
mips = 1000.0
ram_mb = 625.0
"#;

pub fn tiny_traces() -> TempDir {
    let dir = TempDir::new("sim-tiny");
    // Names with spaces, as in the real set.
    write_trace(&dir, "day1", "node a_slice x", &[30, 30, 90]);
    write_trace(&dir, "day1", "node b_slice y", &[20, 20, 20]);
    dir
}

pub fn spec(scenario: &str, traces: &Path, policies: &[&str]) -> RunSpec {
    let scenario = Scenario::parse(scenario, "test.toml").unwrap();
    RunSpec {
        loaded: sim::LoadedScenario {
            scenario,
            origin: "test.toml".into(),
            base_dir: None,
        },
        trace_dir: traces.to_path_buf(),
        policies: policies
            .iter()
            .map(|p| p.parse::<Policy>().unwrap())
            .collect(),
        seed: 7,
        threads: 2,
        progress: false,
    }
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}
