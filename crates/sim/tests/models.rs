//! The CloudSim model worked out by hand, and the engine's pattern as the
//! simulator records it.

mod common;

use common::{TINY, close, spec, tiny_traces, write_trace};
use testkit::TempDir;

/// The CloudSim model on the tiny scenario, worked out by hand: scheduling
/// events 0.1 s after each boundary (the first does nothing), demands
/// interpolated in time, 10 % given on the destination and 90 % on the
/// source, over-subscription scaled and rounded down, trapezoid energy,
/// CloudSim's SLATAH and PDM.
#[test]
fn cloudsim_model_matches_hand_computation() {
    let traces = tiny_traces();
    let scen = TINY.replace("policies", "model = \"cloudsim\"\npolicies");
    let r = sim::run(&spec(&scen, &traces, &["thr-mmt-0.8"])).unwrap();
    let d = &r.days[0];
    assert_eq!(d.model, "cloudsim");
    // Placement: each VM alone on a host (host 0: a, host 1: b).
    // 300.1 s: a asks 300.2 MIPS (30 % -> 90 %, 0.1 s in), b 200. The
    // coldspot (host 1, by its load before the plan) moves b to host 0.
    // Until b arrives at 310.1 s: host 0 from 320.2 (a + 10 % of b) to
    // 340.2 MIPS, host 1 at 200 (b is given 90 %, counted fully).
    let f1 = (132.02 + 134.02) / 2.0 * 10.0 + 120.0 * 10.0;
    // Then host 0 from 520.2 MIPS to 600.1 s, where a asks 900 and b 200:
    // 1100 > 1000, scaled: floor(818.18) + floor(181.82) = 999 MIPS.
    let f2 = (152.02 + 199.9) / 2.0 * 290.0;
    // 600.1 s: host 0 is a hotspot; a (first, equal memory) moves to host 1,
    // which was off. Host 0: a given floor(900 x 1000/1100 x 0.9) = 736,
    // counted as 736 / 0.9, plus b's 181; host 1: 10 % of 900.
    let u0 = (736.0 / 0.9 + 181.0) / 1000.0;
    let f3 = (100.0 + 100.0 * u0) * 10.0 + 109.0 * 10.0;
    let kwh = (f1 + f2 + f3) / 3.6e6;
    assert!(close(d.energy_kwh, kwh), "{} vs {kwh}", d.energy_kwh);
    assert_eq!(d.migrations, 2);
    assert_eq!(d.host_shutdowns, 1);
    // SLATAH: host 0 violates while b moves in and while a moves out with
    // the host over-subscribed (10 + 10 s of 310 s active); host 1 while a
    // moves in (10 s of 20 s active).
    let slatah = 30.0 / 330.0;
    assert!(close(d.slatah, slatah), "{} vs {slatah}", d.slatah);
    // PDM: b lost 10 % of 200 MIPS for 10 s, a 900 - 736 for 10 s, of all
    // the CPU requested.
    let requested = 300.2 * 10.0 + 320.2 * 290.0 + 900.0 * 10.0 + 200.0 * 310.0;
    let pdm = (200.0 + 1640.0) / requested;
    assert!(close(d.pdm, pdm), "{} vs {pdm}", d.pdm);
}

/// In the CloudSim model a VM that asks for no CPU (two zero samples in a
/// row) is removed for good, and a host's energy over an interval is zero
/// when its utilization was zero at the start.
#[test]
fn cloudsim_model_removes_idle_vms() {
    let dir = TempDir::new("sim-idle");
    write_trace(&dir, "day1", "x", &[50, 0, 0]);
    write_trace(&dir, "day1", "y", &[0, 0, 50]);
    let scen = TINY.replace("policies", "model = \"cloudsim\"\npolicies");
    let r = sim::run(&spec(&scen, &dir, &["dvfs", "npa"])).unwrap();
    let d = &r.days[0];
    // 300.1 s: x asks nothing and is removed; y asks 0.1/300 of 50 % (not
    // zero) and stays. Host 0's energy is zero from then on; host 1 goes
    // from 1/6 MIPS to 500 MIPS at 600.1 s.
    assert_eq!(d.vms_at_end, 1);
    let u = 1.0 / 6000.0;
    let kwh = (100.0 + 100.0 * u + 150.0) / 2.0 * 300.0 / 3.6e6;
    assert!(close(d.energy_kwh, kwh), "{} vs {kwh}", d.energy_kwh);
    // npa: full power from the first event, as CloudSim counts it.
    assert!(close(r.days[1].energy_kwh, 2.0 * 200.0 * 600.0 / 3.6e6));
}

/// The auto pattern's mode is recorded per interval with the pool's load,
/// and its switches per day: a pool that rises from 20 % to 80 % and falls
/// back balances while it is busy.
#[test]
fn auto_pattern_is_recorded_per_interval() {
    let dir = TempDir::new("sim-auto");
    let profile = [20, 20, 80, 80, 80, 20, 20, 20];
    write_trace(&dir, "day1", "a", &profile);
    write_trace(&dir, "day1", "b", &profile);
    let scen = TINY.replace("samples_per_day = 3", "samples_per_day = 8")
        + "\n[manager]\npattern = \"auto\"\nconsolidate_below = 0.3\nbalance_above = 0.6\ndwell = 1\n";
    let r = sim::run(&spec(&scen, &dir, &["thr-mmt-0.8", "dvfs"])).unwrap();
    let d = &r.days[0];
    assert_eq!(d.modes, "ccbbbccc");
    assert_eq!(d.mode_switches, 2);
    assert_eq!(d.balance_intervals, 3);
    assert_eq!(d.pool_load.len(), 8);
    assert!((d.pool_load[2] - 0.8).abs() < 1e-12);
    // npa and dvfs have no engine: nothing recorded.
    assert!(r.days[1].modes.is_empty() && r.days[1].mode_switches == 0);
    let svg = sim::report::pattern_svg(&r)
        .unwrap()
        .expect("a day balanced");
    assert!(svg.contains("thr-mmt-0.8 day1 (2 switches)"), "legend");
}
