//! Row 11 of docs/SAFETY.md: migrations that complete, with every strategy.

use crate::harness::*;

fn happy_path(strategy: &str) {
    let _g = serial();
    let dir = TempDir::new(strategy);
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "dst", &secret, &[]);
    let mut m = src.start_migrate(
        dir.path(),
        "migrate",
        &dest.addr,
        &secret,
        &["--strategy", strategy, "--max-bandwidth", "1Gbit"],
    );
    let st = m.wait(PATIENCE * 2);
    assert_migrate_completed(st, &m);
    let report: serde_json::Value = serde_json::from_str(&m.stdout_text()).unwrap();
    assert_eq!(report["strategy"], strategy);
    assert_completed_on(&mut src, &mut dest, &m);
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
