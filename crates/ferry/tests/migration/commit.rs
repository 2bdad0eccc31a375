//! Rows 12-13 of docs/SAFETY.md: the commit window (docs/PROTOCOL.md, "The
//! commit rule, and the in-doubt window"). With the default lease a
//! pre-copy's Commit goes out under it: a link back in time completes the
//! migration, a link down for good gives the VM back to the source once
//! the lease has run out. Without transactions (`--sync-interval 0s`) the
//! window stays in doubt.

use std::path::Path;

use crate::harness::*;

const COPY: [&str; 4] = ["--strategy", "stop-and-copy", "--max-bandwidth", "1Gbit"];
/// Short lease and recovery, so that a link down for good settles quickly.
const QUICK: [&str; 4] = ["--lease", "200ms", "--recovery-timeout", "1s"];

/// Starts a stop-and-copy migration (`COPY` plus `extra`) through a proxy
/// that applies `fault`, and waits until it fired.
fn commit_window_attempt(
    dir: &Path,
    src: &Vm,
    secret: &Path,
    fault: Fault,
    extra: &[&str],
    dest_extra: &[&str],
) -> (Dest, Proxy, Proc) {
    let dest = Dest::start(dir, "commit-dst", secret, dest_extra);
    let proxy = start_proxy(dest.socket_addr(), fault);
    let flags: Vec<&str> = COPY.iter().chain(extra).copied().collect();
    let m = src.start_migrate(
        dir,
        "commit-migrate",
        &proxy.addr.to_string(),
        secret,
        &flags,
    );
    wait_fired(&proxy);
    (dest, proxy, m)
}

/// The proxy closes both connections at the Commit frame: just after it
/// (`after_frame`: the destination reads Commit, its Resumed is lost) or
/// inside it (Commit never arrives).
fn cut_at_commit(after_frame: bool) -> Fault {
    let spot = if after_frame {
        Spot::After
    } else {
        Spot::Inside
    };
    Fault::new(Dir::ToDest, COMMIT, Action::Cut).at(spot)
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

/// The destination runs and verifies the VM, the source never again.
fn assert_runs_on_destination(src: &mut Vm, dest: &mut Dest) {
    assert_source_never_resumes(src);
    wait_for("the destination to run and verify", PATIENCE, || {
        let v = status(&dest.sock)?;
        assert_eq!(v["guest"]["verify_failures"], 0, "{v}");
        let log = read_serial(&dest.serial);
        (v["state"] == "running" && log.verify_ok >= 1 && !log.heartbeats.is_empty()).then_some(())
    });
    assert_exactly_one(src, &mut [dest]);
    let log = read_serial(&dest.serial);
    assert!(log.verify_fail.is_empty(), "{log:?}");
    assert_one_after_other(&read_serial(&src.serial), &log);
}

/// A link back within the recovery timeout: the source reconnects, sends
/// Commit again, and the migration completes on the destination.
fn link_back_completes(name: &str, after_frame: bool) {
    let _g = serial();
    let dir = TempDir::new(name);
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let fault = cut_at_commit(after_frame);
    let (mut dest, _proxy, mut m) =
        commit_window_attempt(dir.path(), &src, &secret, fault, &[], &[]);
    let st = m.wait(PATIENCE);
    let report: serde_json::Value = m.report();
    assert_migrate_completed(st, &m);
    assert_eq!(report["leased_commit"], true, "{report}");
    assert_runs_on_destination(&mut src, &mut dest);
}

#[test]
fn commit_delivered_but_ack_lost_the_link_back_completes() {
    link_back_completes("commit-ack", true);
}

#[test]
fn commit_lost_in_flight_the_link_back_completes() {
    link_back_completes("commit-lost", false);
}

/// The link stalls at `dir`'s `kind` frame, then goes for good (no
/// listener): the source takes the VM back once its lease has run out;
/// the destination, whether it ran the VM (output held) or not, discards.
fn link_down_takes_back(name: &str, dir_: Dir, kind: u8) {
    let _g = serial();
    let dir = TempDir::new(name);
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let before = read_serial(&src.serial).heartbeats.len();
    let fault = Fault::new(dir_, kind, Action::Stall).at(Spot::Before);
    let (mut dest, proxy, mut m) = commit_window_attempt(
        dir.path(),
        &src,
        &secret,
        fault,
        &QUICK,
        &["--recovery-timeout", "1s"],
    );
    drop(proxy);
    let st = m.wait(PATIENCE);
    let report = m.report();
    assert_eq!(st.code(), Some(1), "migrate: {}\n{report}", m.stderr_text());
    assert_eq!(report["vm_location"], "source", "{report}");
    assert_eq!(report["leased_commit"], true, "{report}");
    let outcome = report["outcome"].to_string();
    assert!(
        outcome.contains("resumed on the source from transaction"),
        "{report}"
    );
    // Whatever the destination printed stayed held: its log is empty.
    dest.assert_discarded(&[]);
    wait_for("the source to run and verify again", PATIENCE, || {
        let v = status(&src.sock)?;
        assert_eq!(v["guest"]["verify_failures"], 0, "{v}");
        let s = read_serial(&src.serial);
        (s.heartbeats.len() >= before + 3 && s.verify_ok >= 2).then_some(())
    });
    let s = read_serial(&src.serial);
    assert!(s.verify_fail.is_empty(), "{s:?}");
    assert!(
        s.heartbeats.windows(2).all(|w| w[0] < w[1]),
        "source heartbeats repeat: {:?}",
        s.heartbeats
    );
    assert_exactly_one(&mut src, &mut [&mut dest]);
}

#[test]
fn commit_lost_and_the_link_down_the_vm_resumes_on_the_source() {
    link_down_takes_back("commit-down", Dir::ToDest, COMMIT);
}

#[test]
fn resumed_lost_and_the_link_down_the_vm_resumes_on_the_source() {
    link_down_takes_back("resumed-down", Dir::ToSource, RESUMED);
}

/// Unleased (`--sync-interval 0s`) the window stays in doubt: Commit delivered and
/// Resumed lost leaves the VM on the destination alone.
#[test]
fn unleased_ack_lost_vm_runs_only_on_destination() {
    let _g = serial();
    let dir = TempDir::new("commit-ack-nolease");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let fault = cut_at_commit(true);
    let (mut dest, _proxy, mut m) = commit_window_attempt(
        dir.path(),
        &src,
        &secret,
        fault,
        &["--sync-interval", "0s"],
        &[],
    );
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
    assert_runs_on_destination(&mut src, &mut dest);
}

#[test]
fn unleased_commit_lost_in_flight_vm_never_runs_twice() {
    let _g = serial();
    let dir = TempDir::new("commit-lost-nolease");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let fault = cut_at_commit(false);
    let (mut dest, _proxy, mut m) = commit_window_attempt(
        dir.path(),
        &src,
        &secret,
        fault,
        &["--sync-interval", "0s"],
        &[],
    );
    m.assert_failed_with(PATIENCE, &["resume"]);
    assert_eq!(m.try_status().and_then(|s| s.code()), Some(4));
    assert_in_doubt(&m.report());
    // The destination never read Commit: it discards; the source has retired
    // the VM. Unleased, the cost of "never two" is this row: nowhere.
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
    let fault = cut_at_commit(false);
    let (mut dest, _proxy, mut m) = commit_window_attempt(
        dir.path(),
        &src,
        &secret,
        fault,
        &["--sync-interval", "0s"],
        &[],
    );
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
