//! What an operator controls and is told (docs/CLI.md): a missed downtime
//! target has its own exit status, --max-rounds/--timeout bound pre-copy
//! with --on-timeout abort or force, and a failed snapshot names the file
//! asked for.

use crate::harness::*;

#[test]
fn a_missed_downtime_target_exits_3_and_says_so() {
    let _g = serial();
    let dir = TempDir::new("missed-target");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "dst", &secret, &[]);
    let mut args = NEVER.to_vec();
    args.extend(["--max-rounds", "2"]);
    let mut m = src.start_migrate(dir.path(), "migrate", &dest.addr, &secret, &args);
    let st = m.wait(PATIENCE * 2);
    assert_eq!(st.code(), Some(3), "{}", m.stderr_text());
    let report = m.report();
    assert_eq!(report["downtime_target_missed"], true, "{report}");
    assert_eq!(report["limit_reached"], "max-rounds", "{report}");
    assert_eq!(
        report["rounds"], 3,
        "two pre-copy rounds, then the switchover"
    );
    let err = m.stderr_text();
    assert!(err.contains("exceeded the 1us target"), "{err}");
    assert!(!err.contains("error"), "a moved VM is not an error: {err}");
    assert_completed_on(&mut src, &mut dest, &m);
}

#[test]
fn max_rounds_with_abort_keeps_the_vm_on_the_source() {
    let _g = serial();
    let dir = TempDir::new("abort-rounds");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "dst", &secret, &[]);
    let mut args = NEVER.to_vec();
    args.extend(["--max-rounds", "2", "--on-timeout", "abort"]);
    let mut m = src.start_migrate(dir.path(), "migrate", &dest.addr, &secret, &args);
    m.assert_failed_with(PATIENCE * 2, &["did not converge", "2 rounds"]);
    assert_eq!(m.try_status().and_then(|s| s.code()), Some(1));
    let report = m.report();
    assert_eq!(report["vm_location"], "source", "{report}");
    assert_eq!(report["limit_reached"], "max-rounds", "{report}");
    dest.assert_discarded(&["cancelled"]);
    src.assert_running_and_healthy();
    assert_exactly_one(&mut src, &mut [&mut dest]);
}

#[test]
fn a_timeout_with_force_switches_over() {
    let _g = serial();
    let dir = TempDir::new("force-timeout");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "dst", &secret, &[]);
    let mut args = NEVER.to_vec();
    args.extend(["--timeout", "1s", "--on-timeout", "force"]);
    let mut m = src.start_migrate(dir.path(), "migrate", &dest.addr, &secret, &args);
    let st = m.wait(PATIENCE * 2);
    let report = m.report();
    assert_eq!(report["limit_reached"], "timeout", "{report}");
    assert_migrate_completed(st, &m);
    assert_completed_on(&mut src, &mut dest, &m);
}

#[test]
fn a_failed_snapshot_names_the_file_asked_for() {
    let _g = serial();
    let dir = TempDir::new("snapshot-error");
    let mut src = Vm::boot(dir.path(), "src");
    let target = dir.join("no-such-dir").join("vm.snap");
    let mut ctl = Proc::spawn(
        dir.path(),
        "ctl",
        &[
            "ctl",
            "--api",
            src.sock.to_str().unwrap(),
            "snapshot",
            target.to_str().unwrap(),
        ],
    );
    ctl.assert_failed_with(PATIENCE, &[target.to_str().unwrap()]);
    assert!(
        !ctl.stderr_text().contains(".partial"),
        "{}",
        ctl.stderr_text()
    );
    src.assert_running_and_healthy();
}

#[test]
fn bad_values_are_refused_by_clap_with_status_2() {
    let dir = TempDir::new("usage");
    for args in [
        &[
            "receive",
            "--listen",
            "127.0.0.1:0",
            "--secret-file",
            "s",
            "--max-memory",
            "0",
        ][..],
        &[
            "receive",
            "--listen",
            "127.0.0.1:0",
            "--secret-file",
            "s",
            "--max-memory",
            "0M",
        ][..],
        &["run", "--guest", "idle", "--vcpus", "0"][..],
        &["run", "--guest", "idle", "--memory", "1.5"][..],
        &["sim", "--threads", "0"][..],
        &["bench", "migrate", "--reps", "0"][..],
        &["bench", "faults", "--trials", "0"][..],
        &["bench", "faults", "--seed", "-1"][..],
        &[
            "migrate",
            "--api",
            "x",
            "--to",
            "y",
            "--secret-file",
            "s",
            "--max-downtime",
            "3",
        ][..],
        &[
            "migrate",
            "--api",
            "x",
            "--to",
            "y",
            "--secret-file",
            "s",
            "--on-timeout",
            "pray",
        ][..],
    ] {
        let mut p = Proc::spawn(dir.path(), "usage", args);
        let st = p.wait(PATIENCE);
        let err = p.stderr_text();
        assert_eq!(st.code(), Some(2), "{args:?}: {err}");
        let lines: Vec<_> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert_no_panic("ferry", &err);
    }
}
