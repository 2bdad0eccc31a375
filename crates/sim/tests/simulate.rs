//! The simulator on hand-made traces whose results are worked out by hand,
//! the default scenario's baseline, determinism, and bad input.

mod common;

use std::path::Path;

use common::{TINY, close, spec, tiny_traces, write_trace};
use sim::cli::{SimArgs, build_spec};
use sim::{Policy, RunSpec, Scenario};
use testkit::TempDir;

#[test]
fn tiny_scenario_matches_hand_computation() {
    let traces = tiny_traces();
    let r = sim::run(&spec(TINY, &traces, &["thr-mmt-0.8", "dvfs", "npa"])).unwrap();
    let thr = &r.days[0];
    // Start: VM 0 (30 %) on host 0, VM 1 (20 %) on host 1 (each reserves its
    // full 1000 MIPS). t=0: host 1 is the coldspot; VM 1 moves to host 0 in
    // 10 s: host 0 runs 300 + 10 % of 200 MIPS for 10 s (132 W), then 500
    // (150 W) for 290 s; host 1 runs 200 MIPS (120 W) for 10 s, then is off.
    let i0 = 132.0 * 10.0 + 150.0 * 290.0 + 120.0 * 10.0;
    // t=1: host 0 at 50 %, nowhere to empty it to: 150 W.
    let i1 = 150.0 * 300.0;
    // t=2: VM 0 asks 900: host 0 at 1100 > 0.8 (and over capacity). MMT (equal
    // memory, first) moves VM 0 to host 1 (woken) in 10 s. Host 0: 200 W for
    // 10 s (overloaded), then 200 MIPS (120 W); host 1: 10 % of 900 (109 W),
    // then 900 (190 W).
    let i2 = 200.0 * 10.0 + 120.0 * 290.0 + 109.0 * 10.0 + 190.0 * 290.0;
    let kwh = (i0 + i1 + i2) / 3.6e6;
    assert!(close(thr.energy_kwh, kwh), "{} vs {kwh}", thr.energy_kwh);
    assert_eq!(thr.migrations, 2);
    assert_eq!(thr.hotspot_migrations, 1);
    assert_eq!(thr.host_shutdowns, 1);
    // Ferry's SLATAH: host 0 overloaded 10 s of 900 s active; host 1 never
    // (310 s active, more than one interval, so it counts).
    let slatah_ferry = (10.0 / 900.0 + 0.0) / 2.0;
    assert!(
        close(thr.slatah_ferry, slatah_ferry),
        "{}",
        thr.slatah_ferry
    );
    // CloudSim's: a host is also violating while a VM moves in. Host 0: 10 s
    // overloaded + 10 s receiving VM 1; host 1: 10 s receiving VM 0; over
    // 900 + 310 s active.
    let slatah = (20.0 + 10.0) / (900.0 + 310.0);
    assert!(close(thr.slatah, slatah), "{} vs {slatah}", thr.slatah);
    // PDM: VM 0 lost 10 % of 900 MIPS for 10 s of 450000 MIPS-s requested;
    // VM 1 10 % of 200 for 10 s of 180000. Ferry's: the mean of the ratios;
    // CloudSim's: the ratio of the sums.
    let pdm_ferry = (900.0 / 450000.0 + 200.0 / 180000.0) / 2.0;
    assert!(close(thr.pdm_ferry, pdm_ferry), "{}", thr.pdm_ferry);
    let pdm = (900.0 + 200.0) / (450000.0 + 180000.0);
    assert!(close(thr.pdm, pdm), "{} vs {pdm}", thr.pdm);
    assert!(close(thr.slav, slatah * pdm));
    assert!(close(thr.esv, kwh * slatah * pdm));
    assert!(close(thr.esv_ferry, kwh * slatah_ferry * pdm_ferry));
    assert_eq!(thr.model, "ferry");

    // DVFS: no migrations; host 0 at 30, 30, 90 %, host 1 at 20 % throughout.
    let dvfs = &r.days[1];
    let j = (130.0 + 130.0 + 190.0) * 300.0 + 120.0 * 900.0;
    assert!(close(dvfs.energy_kwh, j / 3.6e6), "{}", dvfs.energy_kwh);
    assert_eq!(dvfs.migrations, 0);
    assert_eq!(dvfs.pdm, 0.0);
    // NPA: both hosts at 200 W all the time.
    let npa = &r.days[2];
    assert!(close(npa.energy_kwh, 2.0 * 200.0 * 900.0 / 3.6e6));
}

#[test]
fn precopy_model_lengthens_migrations() {
    // Dirtying at 31.25 MB/s over 62.5 MB/s: rounds of 10, 5, 2.5, 1.25 s,
    // then 39.0625 MB stop-and-copy (0.625 s): 19.375 s instead of 10 s.
    let traces = tiny_traces();
    let scen = format!(
        "{TINY}\n[migration]\nmodel = \"precopy\"\ndirty_rate_mb_s = 31.25\nstop_copy_mb = 50.0\n"
    );
    let r = sim::run(&spec(&scen, &traces, &["thr-mmt-0.8"])).unwrap();
    let t = 19.375;
    let pdm = (0.1 * 900.0 * t / 450000.0 + 0.1 * 200.0 * t / 180000.0) / 2.0;
    assert!(
        close(r.days[0].pdm_ferry, pdm),
        "{} vs {pdm}",
        r.days[0].pdm_ferry
    );
    assert_eq!(r.days[0].migrations, 2);
}

#[test]
fn default_scenario_npa_is_800_hosts_at_full_power_for_24_hours() {
    // The baseline does not depend on the load: a few synthetic VMs suffice.
    let dir = TempDir::new("sim-npa");
    for i in 0..8u32 {
        let v: Vec<u32> = (0..288).map(|t| (t * 7 + i * 13) % 100).collect();
        write_trace(&dir, "20110101", &format!("vm {i}"), &v);
    }
    let mut loaded = Scenario::builtin();
    loaded.scenario.simulation.policies = vec!["npa".into()];
    let r = sim::run(&RunSpec {
        loaded,
        trace_dir: dir.to_path_buf(),
        policies: vec![Policy::Npa],
        seed: 1,
        threads: 1,
        progress: false,
    })
    .unwrap();
    let expected = (400.0 * 117.0 + 400.0 * 135.0) * 24.0 / 1000.0;
    assert_eq!(expected, 2419.2);
    assert!(
        close(r.days[0].energy_kwh, expected),
        "{}",
        r.days[0].energy_kwh
    );
    assert_eq!(r.days[0].hosts, 800);
}

/// A small synthetic data center with bursty traces, for determinism.
fn synthetic(dir: &Path, vms: u32) {
    let mut x: u64 = 12345;
    for day in ["d1", "d2"] {
        for i in 0..vms {
            let v: Vec<u32> = (0..48)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 33) % 100) as u32
                })
                .collect();
            write_trace(dir, day, &format!("vm {i:03}"), &v);
        }
    }
}

const SMALL: &str = r#"
[simulation]
samples_per_day = 48
[[host_type]]
name = "G4"
count = 10
cores = 2
mips_per_core = 1860.0
ram_mb = 4096.0
bandwidth_mbps = 1000.0
power_watts = [86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0]
[[host_type]]
name = "G5"
count = 10
cores = 2
mips_per_core = 2660.0
ram_mb = 4096.0
bandwidth_mbps = 1000.0
power_watts = [93.7, 97.0, 101.0, 105.0, 110.0, 116.0, 121.0, 125.0, 129.0, 133.0, 135.0]
[[vm_type]]
name = "a"
mips = 2500.0
ram_mb = 870.0
[[vm_type]]
name = "b"
mips = 1000.0
ram_mb = 613.0
"#;

#[test]
fn runs_are_byte_identical() {
    let dir = TempDir::new("sim-det");
    synthetic(&dir, 24);
    let policies = [
        "dvfs",
        "thr-rs-0.8",
        "iqr-mc-1.5",
        "mad-mu-2.5",
        "lr-mmt-1.2",
        "lrr-rs-1.2",
        "sp-vsr-0.75",
    ];
    let out = |threads| {
        let mut s = spec(SMALL, &dir, &policies);
        s.threads = threads;
        let r = sim::run(&s).unwrap();
        (
            sim::report::days_csv(&r).unwrap(),
            sim::report::summary_csv(&r).unwrap(),
            sim::report::plot_svg(&r).unwrap(),
            serde_json::to_string(&r).unwrap(),
        )
    };
    let a = out(1);
    assert_eq!(a, out(1));
    assert_eq!(a, out(2));
    assert!(a.0.lines().count() == 1 + 2 * policies.len());
    // A different seed changes the random selector's choices.
    let mut s = spec(SMALL, &dir, &["thr-rs-0.8"]);
    let r1 = sim::run(&s).unwrap();
    s.seed = 8;
    let r2 = sim::run(&s).unwrap();
    assert_ne!(
        sim::report::days_csv(&r1).unwrap(),
        sim::report::days_csv(&r2).unwrap()
    );
    // The indexed placement under a tie tolerance is deterministic too, and
    // the results say it was used (and say nothing when it was not).
    let json = |tolerance, threads| {
        let mut s = spec(SMALL, &dir, &["lr-mmt-1.2", "thr-mmt-0.8"]);
        s.loaded.scenario.manager.tie_tolerance_w = tolerance;
        s.threads = threads;
        serde_json::to_string(&sim::run(&s).unwrap()).unwrap()
    };
    let t = json(0.5, 1);
    assert_eq!(t, json(0.5, 2));
    assert!(t.contains(r#""tie_tolerance_w":0.5"#), "{t}");
    assert!(!json(0.0, 1).contains("tie_tolerance_w"));
}

#[test]
fn cli_writes_table_csv_svg_and_json() {
    let traces = tiny_traces();
    let scen_dir = TempDir::new("sim-scen");
    let scen = scen_dir.join("tiny scenario.toml");
    std::fs::write(&scen, TINY).unwrap();
    let out = scen_dir.join("out");
    let args = SimArgs {
        scenario: Some(scen),
        trace_dir: Some(traces.to_path_buf()),
        policies: vec!["npa".into(), "dvfs".into(), "lr-mmt".into()],
        out: Some(out.clone()),
        no_progress: true,
        ..SimArgs::default()
    };
    sim::cli::run(&args).unwrap();
    let svg = std::fs::read_to_string(out.join("plot.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("lr-mmt-1.2"));
    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    let days = std::fs::read_to_string(out.join("days.csv")).unwrap();
    assert!(
        days.starts_with("policy,day,model,hosts,vms,energy_kwh,slatah,"),
        "{days}"
    );
    assert!(days.contains("npa,day1,ferry,2,2,0.1"), "{days}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["summaries"][2]["policy"], "lr-mmt-1.2");
}

fn run_err(scenario: &str, traces: &Path) -> String {
    let s = Scenario::parse(scenario, "bad.toml");
    match s {
        Err(e) => e.to_string(),
        Ok(sc) => {
            let names = sc.simulation.policies.clone();
            let policies: Vec<&str> = names.iter().map(String::as_str).collect();
            match sim::run(&spec(scenario, traces, &policies)) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("expected an error"),
            }
        }
    }
}

#[test]
fn bad_traces_are_clear_errors() {
    let dir = TempDir::new("sim-badtrace");
    // Missing folder.
    let e = run_err(TINY, &dir.join("nope"));
    assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
    // No day folders.
    let e = run_err(TINY, &dir);
    assert!(e.contains("no day folders"), "{e}");
    // Empty day folder.
    std::fs::create_dir_all(dir.join("day1")).unwrap();
    let e = run_err(TINY, &dir);
    assert!(
        e.contains("day1") && e.contains("holds no trace files"),
        "{e}"
    );
    // Wrong line count, in a file whose name has spaces.
    write_trace(&dir, "day1", "host one_slice", &[1, 2]);
    let e = run_err(TINY, &dir);
    assert!(
        e.contains("host one_slice has 2 samples, expected 3"),
        "{e}"
    );
    // Not a number: the file and line are named.
    std::fs::write(dir.join("day1").join("host one_slice"), "1\n2x\n3\n").unwrap();
    let e = run_err(TINY, &dir);
    assert!(e.contains("host one_slice:2") && e.contains("2x"), "{e}");
    // Fixed: it runs.
    write_trace(&dir, "day1", "host one_slice", &[1, 2, 3]);
    let s = spec(TINY, &dir, &["thr-mmt-0.8"]);
    assert_eq!(sim::run(&s).unwrap().days[0].vms, 1);
    // An unknown day name.
    let mut s = spec(TINY, &dir, &["npa"]);
    s.loaded.scenario.simulation.day_names = Some(vec!["day9".into()]);
    let e = sim::run(&s).unwrap_err().to_string();
    assert!(e.contains("day9"), "{e}");
}

/// Interval by interval: after the first interval only its energy counts
/// (the hand computation above); the whole day is what `simulate_day` gives.
#[test]
fn day_simulation_steps_one_interval_at_a_time() {
    let traces = tiny_traces();
    let scenario = Scenario::parse(TINY, "test.toml").unwrap();
    let day = sim::trace::load_day(&traces, "day1", 3, sim::trace::FileOrder::Name).unwrap();
    let policy: Policy = "thr-mmt-0.8".parse().unwrap();
    let mut first = sim::DaySimulation::new(&scenario, &day, &policy, 7).unwrap();
    first.step().unwrap();
    let i0 = 132.0 * 10.0 + 150.0 * 290.0 + 120.0 * 10.0;
    let r = first.finish();
    assert!(close(r.energy_kwh, i0 / 3.6e6), "{}", r.energy_kwh);
    assert_eq!(r.migrations, 1);
    let mut all = sim::DaySimulation::new(&scenario, &day, &policy, 7).unwrap();
    let mut steps = 0;
    while !all.is_over() {
        all.step().unwrap();
        steps += 1;
    }
    assert_eq!(steps, 3);
    all.step().unwrap(); // past the end: nothing happens
    let whole = sim::simulate_day(&scenario, &day, &policy, 7).unwrap();
    assert_eq!(all.finish(), whole);
}

#[test]
fn impossible_scenarios_and_unknown_names_are_clear_errors() {
    let dir = tiny_traces();
    let big = TINY.replace(
        "mips = 1000.0\nram_mb = 625.0",
        "mips = 5000.0\nram_mb = 625.0",
    );
    let e = run_err(&big, &dir);
    assert!(
        e.contains("bad.toml") && e.contains("vm_type[0]") && e.contains("larger than every host"),
        "{e}"
    );
    let zero = TINY.replace("count = 2", "count = 0");
    let e = run_err(&zero, &dir);
    assert!(e.contains("zero hosts"), "{e}");
    let policy = TINY.replace(
        r#"policies = ["thr-mmt-0.8"]"#,
        r#"policies = ["npa", "lr-foo"]"#,
    );
    let e = run_err(&policy, &dir);
    assert!(
        e.contains("simulation.policies[1]") && e.contains("unknown selector \"foo\""),
        "{e}"
    );
    let typo = TINY.replace("cores = 1", "corez = 1");
    let e = run_err(&typo, &dir);
    assert!(e.contains("bad.toml") && e.contains("corez"), "{e}");
    let wrong_type = TINY.replace("count = 2", "count = \"two\"");
    let e = run_err(&wrong_type, &dir);
    assert!(e.contains("bad.toml") && e.contains("count"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    let pattern = format!("{TINY}\n[manager]\npattern = \"often\"\n");
    let e = run_err(&pattern, &dir);
    assert!(
        e.contains("unknown pattern \"often\" (known: consolidate, balance, auto)"),
        "{e}"
    );
    let e = Scenario::load(&dir.join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml"), "{e}");
    // More VMs than the hosts can hold: names the VM's file.
    let full = TINY.replace("count = 2", "count = 1");
    let e = run_err(&full, &dir);
    assert!(
        e.contains("node b_slice y") && e.contains("fits on no host"),
        "{e}"
    );
    // Unknown policy on the command line.
    let args = SimArgs {
        policies: vec!["bogus".into()],
        trace_dir: Some(dir.to_path_buf()),
        ..SimArgs::default()
    };
    let e = build_spec(&args).unwrap_err().to_string();
    assert!(e.contains("bogus"), "{e}");
}

/// Every manager setting is checked before any trace is read, for every
/// policy (npa included); sizes the machine cannot hold are refused; a
/// trailing blank line in a trace is fine.
#[test]
fn settings_and_sizes_are_checked_before_any_work() {
    // No trace folder at all: the setting is what gets reported.
    let missing = Path::new("/nonexistent/ferry-traces");
    let npa = TINY.replace(r#"policies = ["thr-mmt-0.8"]"#, r#"policies = ["npa"]"#);
    for (setting, what) in [
        ("coldspot_below = -1.0", "coldspot_below (-1)"),
        ("fallback_threshold = 0.0", "fallback threshold 0"),
        ("sandpiper_k = 6", "k <= n"),
        (
            "pattern = \"auto\"\nconsolidate_below = 0.9\nbalance_above = 0.8",
            "must be below balance_above",
        ),
        ("max_migrations_per_host = 0", "at least 1"),
        ("vm_cooldown_s = -5.0", "vm_cooldown_s"),
        ("tie_tolerance_w = -0.5", "tie_tolerance_w (-0.5)"),
        ("tie_tolerance_w = inf", "tie_tolerance_w (inf)"),
    ] {
        let text = format!("{npa}\n[manager]\n{setting}\n");
        let e = run_err(&text, missing);
        assert!(
            e.contains("key `manager`") && e.contains(what),
            "{setting}: {e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    // A size no machine holds: refused with one line before the traces load.
    let dir = tiny_traces();
    let huge = npa.replace("count = 2", "count = 100000000000000");
    let e = run_err(&huge, &dir);
    assert!(
        e.contains("100000000000000 hosts") && e.contains("of memory; this machine has"),
        "{e}"
    );
    // A trailing blank line (and a CRLF one) in a trace file.
    std::fs::write(dir.join("day1").join("node a_slice x"), "30\n30\n90\n\n").unwrap();
    std::fs::write(
        dir.join("day1").join("node b_slice y"),
        "20\r\n20\r\n20\r\n\r\n",
    )
    .unwrap();
    assert_eq!(
        sim::run(&spec(TINY, &dir, &["thr-mmt-0.8"])).unwrap().days[0].vms,
        2
    );
    // A command-line override is checked too.
    let scen = dir.join("s.toml");
    std::fs::write(
        &scen,
        format!("{npa}\n[manager]\nconsolidate_below = 0.95\n"),
    )
    .unwrap();
    let args = SimArgs {
        scenario: Some(scen),
        trace_dir: Some(dir.to_path_buf()),
        pattern: Some(cluster::PatternKind::Auto),
        ..SimArgs::default()
    };
    let e = build_spec(&args).unwrap_err().to_string();
    assert!(e.contains("must be below balance_above"), "{e}");
    let args = SimArgs {
        tie_tolerance_w: Some(f64::NAN),
        pattern: None,
        ..args
    };
    let e = build_spec(&args).unwrap_err().to_string();
    assert!(e.contains("tie_tolerance_w (NaN)"), "{e}");
}
