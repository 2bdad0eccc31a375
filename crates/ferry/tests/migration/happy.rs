//! Row 11 of docs/SAFETY.md: migrations that complete, with every strategy
//! (post-copy ones included: the guest runs on the destination while its
//! pages arrive), and of a guest whose vCPU sleeps in the VMM.

use crate::harness::*;

fn happy_path(strategy: &str) {
    happy_path_of(strategy, GUEST_ARGS);
}

fn happy_path_of(strategy: &str, guest_args: &str) {
    let _g = serial();
    let dir = TempDir::new(strategy);
    let secret = dir.secret("secret");
    let mut src = Vm::boot_with(dir.path(), "src", guest_args);
    let mut dest = Dest::start(dir.path(), "dst", &secret, &[]);
    let mut args = vec![
        "--strategy",
        strategy,
        "--max-bandwidth",
        "1Gbit",
        "--dest-api",
        dest.sock.to_str().unwrap(),
    ];
    if strategy == "hybrid" {
        // Its post-copy end, even where the rounds converge.
        args.extend(["--strategy-param", "copy-under=0s"]);
    }
    let mut m = src.start_migrate(dir.path(), "migrate", &dest.addr, &secret, &args);
    let st = m.wait(PATIENCE * 2);
    assert_migrate_completed(st, &m);
    let report: serde_json::Value = m.report();
    assert_eq!(report["strategy"], strategy);
    // Sampled on both sides (the values depend on the machine's load).
    for k in ["guest_downtime_us", "guest_downtime_resolution_us"] {
        assert!(report[k].as_u64().is_some_and(|v| v > 0), "{k}: {report}");
    }
    assert_completed_on(&mut src, &mut dest, &m);
    if strategy == "postcopy" || strategy == "hybrid" {
        // Every page of the set reached the destination, asked for or pushed.
        let p = &report["postcopy"];
        let n = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("{k}: {report}"));
        assert_eq!(
            n("pages_requested") + n("pages_pushed"),
            n("pages_to_fetch"),
            "{report}"
        );
        eprintln!("{strategy}: {p}");
    }
}

#[test]
fn happy_path_stop_and_copy() {
    happy_path("stop-and-copy");
}

#[test]
fn happy_path_xen() {
    happy_path("xen");
}

#[test]
fn happy_path_downtime() {
    happy_path("downtime");
}

#[test]
fn happy_path_predictive() {
    happy_path("predictive");
}

#[test]
fn happy_path_delayed() {
    happy_path("delayed");
}

#[test]
fn happy_path_auto_converge() {
    happy_path("auto-converge");
}

#[test]
fn happy_path_postcopy() {
    happy_path("postcopy");
}

#[test]
fn happy_path_hybrid() {
    happy_path("hybrid");
}

/// A guest that sleeps in the VMM (`idle=sleep`) between paced writes and
/// through idle phases: the pause handshake wakes its vCPU, and the
/// migration completes and verifies as for a spinning one.
#[test]
fn a_sleeping_guest_migrates_and_verifies() {
    let args = format!("{GUEST_ARGS} idle=sleep phases=busy:1s,idle:1s,busy:1s,idle:1s,busy:0");
    happy_path_of("xen", &args);
    happy_path_of("postcopy", &args);
}
