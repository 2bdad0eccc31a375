//! Rows 12-13 of docs/SAFETY.md: the commit window (docs/PROTOCOL.md, "The
//! commit rule, and the in-doubt window").

use std::path::Path;

use crate::harness::*;

/// Starts a stop-and-copy migration through a proxy that closes both
/// connections at the Commit frame: just after it (`after_frame`, so the
/// destination reads Commit but its Resumed is lost) or inside it (Commit
/// never arrives).
fn commit_window_attempt(
    dir: &Path,
    src: &Vm,
    secret: &Path,
    after_frame: bool,
) -> (Dest, Proxy, Proc) {
    let dest = Dest::start(dir, "commit-dst", secret, &[]);
    let spot = if after_frame {
        Spot::After
    } else {
        Spot::Inside
    };
    let fault = Fault::new(Dir::ToDest, COMMIT, Action::Cut).at(spot);
    let proxy = start_proxy(dest.socket_addr(), fault);
    let m = src.start_migrate(
        dir,
        "commit-migrate",
        &proxy.addr.to_string(),
        secret,
        &["--strategy", "stop-and-copy", "--max-bandwidth", "1Gbit"],
    );
    wait_fired(&proxy);
    (dest, proxy, m)
}

fn assert_in_doubt(report: &serde_json::Value) {
    assert_eq!(report["vm_location"], "unknown", "{report}");
    assert!(
        report["outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("in doubt")),
        "{report}"
    );
}

/// The source's last heartbeat in its log stays put: its VM never runs again.
fn assert_source_never_resumes(src: &mut Vm) {
    let before = read_serial(&src.serial).heartbeats.last().copied();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let after = read_serial(&src.serial).heartbeats.last().copied();
    assert_eq!(before, after, "the source VM ran again after Commit");
    if src.proc.alive() {
        let state = src.state();
        assert!(
            state.as_deref().is_none_or(|s| !holds_vm(s)),
            "the source still holds a live VM after Commit: {state:?}"
        );
    }
}

#[test]
fn commit_delivered_but_ack_lost_vm_runs_only_on_destination() {
    let _g = serial();
    let dir = TempDir::new("commit-ack");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let (mut dest, _proxy, mut m) = commit_window_attempt(dir.path(), &src, &secret, true);
    let st = m.wait(PATIENCE);
    let report: serde_json::Value = m.report();
    // Resumed may or may not slip through before the proxy closes.
    if report["outcome"] == "completed" {
        assert_migrate_completed(st, &m);
    } else {
        m.assert_failed_with(PATIENCE, &[]);
        assert_eq!(st.code(), Some(4), "in doubt has its own status");
        assert_in_doubt(&report);
    }
    assert_source_never_resumes(&mut src);
    wait_for("the destination to run and verify", PATIENCE, || {
        let v = status(&dest.sock)?;
        assert_eq!(v["guest"]["verify_failures"], 0, "{v}");
        let log = read_serial(&dest.serial);
        (v["state"] == "running" && log.verify_ok >= 1 && !log.heartbeats.is_empty()).then_some(())
    });
    assert_exactly_one(&mut src, &mut [&mut dest]);
    let log = read_serial(&dest.serial);
    assert!(log.verify_fail.is_empty(), "{log:?}");
    assert_one_after_other(&read_serial(&src.serial), &log);
}

#[test]
fn commit_lost_in_flight_vm_never_runs_twice() {
    let _g = serial();
    let dir = TempDir::new("commit-lost");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let (mut dest, _proxy, mut m) = commit_window_attempt(dir.path(), &src, &secret, false);
    m.assert_failed_with(PATIENCE, &["resume"]);
    assert_eq!(m.try_status().and_then(|s| s.code()), Some(4));
    assert_in_doubt(&m.report());
    // The destination never read Commit: it discards; the source has retired
    // the VM. The documented cost of "never two" is this row: nowhere.
    dest.assert_discarded(&["nothing runs here"]);
    assert_source_never_resumes(&mut src);
}

/// docs/PROTOCOL.md: in the in-doubt case "the source keeps the paused,
/// retired VM (memory and state) instead of freeing it ... so an operator
/// can decide". `ferry migrate` must not shut the source down, and the
/// source process must keep the VM until told to stop.
fn source_keeps_retired_vm(hold: std::time::Duration) {
    let _g = serial();
    let dir = TempDir::new("commit-keep");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let (mut dest, _proxy, mut m) = commit_window_attempt(dir.path(), &src, &secret, false);
    m.assert_failed_with(PATIENCE, &["resume"]);
    assert!(m.stderr_text().contains("in doubt"), "{}", m.stderr_text());
    dest.assert_discarded(&["nothing runs here"]);
    std::thread::sleep(hold);
    assert!(
        src.proc.alive(),
        "the source process exited and freed the only copy of the VM: {}",
        src.proc.stderr_text()
    );
    assert_eq!(src.state().as_deref(), Some("migrated"));
    assert_source_never_resumes(&mut src);
}

#[test]
fn commit_lost_in_flight_source_keeps_retired_vm() {
    source_keeps_retired_vm(std::time::Duration::from_secs(1));
}

#[test]
fn commit_lost_in_flight_source_keeps_retired_vm_past_a_minute() {
    source_keeps_retired_vm(std::time::Duration::from_secs(65));
}
