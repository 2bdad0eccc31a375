//! Post-copy that an operator asks for, post-copy whose link breaks, and
//! post-copy that loses its source (docs/SAFETY.md, rows 16-19): the switch
//! by hand completes like any migration; a cut or stalled link is survived
//! by reconnecting (the destination fenced meanwhile once its lease
//! lapses); a source process killed after the switch is taken up by a
//! restarted one (`ferry run --recover`) from the memory file it left.

use crate::harness::*;

#[test]
fn the_operator_switches_a_running_pre_copy_to_post_copy() {
    let _g = serial();
    let dir = TempDir::new("ctl-postcopy");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "dst", &secret, &[]);
    let mut m = src.start_migrate(dir.path(), "migrate", &dest.addr, &secret, &NEVER);
    src.wait_progress("pre-copy round 2", |phase, round, _| {
        phase == "iterative" && round >= 2
    });
    let sock = src.sock.to_str().unwrap().to_string();
    let mut ctl = Proc::spawn(
        dir.path(),
        "ctl",
        &["ctl", "--api", &sock, "migrate-postcopy"],
    );
    let st = ctl.wait(PATIENCE);
    assert!(st.success(), "ctl: {}", ctl.stderr_text());
    let st = m.wait(PATIENCE * 2);
    assert_migrate_completed(st, &m);
    let report = m.report();
    assert_eq!(report["postcopy"]["trigger"], "operator", "{report}");
    assert_completed_on(&mut src, &mut dest, &m);
    // No migration runs on the destination: the switch is refused with one line.
    let dsock = dest.sock.to_str().unwrap().to_string();
    let mut late = Proc::spawn(
        dir.path(),
        "late",
        &["ctl", "--api", &dsock, "migrate-postcopy"],
    );
    late.assert_failed_with(PATIENCE, &["no migration is running"]);
}

/// docs/SAFETY.md row 17: the source process is killed (SIGKILL) with
/// pages left. Guest memory outlives it in its state directory; `ferry
/// run --recover` reattaches to the destination (which waited, fenced
/// once its lease lapsed) and serves the rest: the VM completes on the
/// destination, its integrity check passing, heartbeats strictly after
/// the source's, and nothing is left behind.
#[test]
fn a_source_killed_in_post_copy_is_taken_up_by_a_restarted_source() {
    let _g = serial();
    let dir = TempDir::new("postcopy-src-killed");
    let secret = dir.secret("secret");
    // Guest memory on tmpfs, in a base of this test's own.
    let base = StateBase::new();
    let src = Vm::boot_args(
        dir.path(),
        "src",
        GUEST_ARGS,
        &["--state-dir", base.0.to_str().unwrap(), "--name", "src"],
    );
    kill_in_post_copy_and_take_up(&dir, src, &base.0.join("src"), &secret);
}

/// Row 17 for a VM that arrived by migration: `ferry receive` keeps its
/// memory in its state directory too, so when it migrates on in post-copy
/// and that process is killed, a restarted source takes it up the same way.
#[test]
fn a_vm_that_arrived_by_migration_survives_its_next_source_being_killed() {
    let _g = serial();
    let dir = TempDir::new("postcopy-hop-killed");
    let secret = dir.secret("secret");
    let mut first = Vm::boot(dir.path(), "first");
    let base = StateBase::new();
    let mut hop = Dest::start(
        dir.path(),
        "hop",
        &secret,
        &["--state-dir", base.0.to_str().unwrap(), "--name", "hop"],
    );
    let mut m = first.start_migrate(dir.path(), "migrate1", &hop.addr, &secret, &[]);
    let st = m.wait(PATIENCE * 2);
    assert_migrate_completed(st, &m);
    assert_completed_on(&mut first, &mut hop, &m);
    kill_in_post_copy_and_take_up(&dir, hop.into_vm(), &base.0.join("hop"), &secret);
}

/// Migrates `src` to a new destination in post-copy over a slow link,
/// kills its process after the switch, restarts it from `state` (its
/// state directory) and checks that the VM completes on the destination,
/// whole and never on two hosts, with nothing left behind.
fn kill_in_post_copy_and_take_up(
    dir: &TempDir,
    mut src: Vm,
    state: &std::path::Path,
    secret: &std::path::Path,
) {
    let dest = Dest::start(dir.path(), "dst", secret, &["--recovery-timeout", "30s"]);
    // 32 MiB to fetch over a 50 Mbit/s link: post-copy lasts about 5 s
    // (the restarted source keeps the recorded link).
    let mut m = src.start_migrate(
        dir.path(),
        "migrate",
        &dest.addr,
        secret,
        &["--strategy", "postcopy", "--link-bandwidth", "50Mbit"],
    );
    src.wait_progress("post-copy", |phase, _, _| phase == "postcopy");
    src.proc.kill();
    m.kill();
    assert!(state.join("memory").exists() && state.join("recovery.json").exists());
    let sock = dir.path().join("src2.sock");
    let serial2 = dir.path().join("src2.log");
    let mut again = Proc::spawn(
        dir.path(),
        "src2",
        &[
            "run",
            "--recover",
            state.to_str().unwrap(),
            "--api",
            sock.to_str().unwrap(),
            "--serial",
            serial2.to_str().unwrap(),
            "--timestamps",
        ],
    );
    let report = wait_for("the restarted source to complete", PATIENCE * 2, || {
        assert!(
            again.alive(),
            "ferry run --recover: {}",
            again.stderr_text()
        );
        let c = api::Client::new(&sock).with_timeout(std::time::Duration::from_secs(10));
        match c.get(api::routes::VM_MIGRATE) {
            Ok((200, v)) if v["done"] == true => Some(v["report"].clone()),
            _ => None,
        }
    });
    assert_eq!(report["outcome"], "completed", "{report}");
    assert_eq!(report["vm_location"], "destination", "{report}");
    assert_eq!(
        report["postcopy"]["trigger"], "restarted source",
        "{report}"
    );
    // It served pages the killed source had not sent.
    let p = &report["postcopy"];
    let served = ["pages_pushed", "pages_requested", "zero_pages"]
        .iter()
        .map(|k| p[k].as_u64().unwrap_or(0))
        .sum::<u64>();
    assert!(served > 0, "{report}");
    assert_runs_and_verifies(&dest);
    // Nothing is left to recover.
    assert!(!state.join("recovery.json").exists());
    let mut ctl = Proc::spawn(
        dir.path(),
        "ctl",
        &["ctl", "--api", sock.to_str().unwrap(), "shutdown"],
    );
    assert!(ctl.wait(PATIENCE).success(), "ctl: {}", ctl.stderr_text());
    let st = again.wait(PATIENCE);
    assert!(
        st.success(),
        "ferry run --recover exited {st}: {}",
        again.stderr_text()
    );
    assert_no_panic("restarted source", &again.stderr_text());
    // The state directory went with the process.
    assert!(!state.exists(), "{} is left", state.display());
    let s = read_serial(&src.serial);
    let d = read_serial(&dest.serial);
    let r = read_serial(&serial2);
    assert!(
        r.heartbeats.is_empty(),
        "the VM ran on the restarted source: {r:?}"
    );
    assert!(
        s.verify_fail.is_empty() && d.verify_fail.is_empty(),
        "{s:?} {d:?}"
    );
    assert_one_after_other(&s, &d);
}

/// A `ferry migrate` in post-copy through a proxy whose fault (`action` on
/// a Pages frame to the destination) is armed once post-copy runs.
fn postcopy_through(
    dir: &TempDir,
    src: &Vm,
    dest: &Dest,
    secret: &std::path::Path,
    action: Action,
) -> (Proc, Proxy) {
    let fault = Fault::new(Dir::ToDest, PAGES, action).disarmed();
    let proxy = start_proxy(dest.socket_addr(), fault);
    let m = src.start_migrate(
        dir.path(),
        "migrate",
        &proxy.addr.to_string(),
        secret,
        &[
            "--strategy",
            "postcopy",
            "--max-bandwidth",
            "50Mbit",
            "--lease",
            "300ms",
        ],
    );
    src.wait_progress("post-copy", |phase, _, _| phase == "postcopy");
    proxy.arm();
    wait_fired(&proxy);
    (m, proxy)
}

/// docs/SAFETY.md row 18: the link is cut after the switch. The source
/// reconnects (authenticated again, same migration) and the VM completes
/// on the destination, its integrity check passing, heartbeats strictly
/// after the source's.
#[test]
fn a_link_cut_in_post_copy_reconnects_and_completes() {
    let _g = serial();
    let dir = TempDir::new("postcopy-cut");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "dst", &secret, &[]);
    let (mut m, proxy) = postcopy_through(&dir, &src, &dest, &secret, Action::Cut);
    let st = m.wait(PATIENCE * 2);
    assert_migrate_completed(st, &m);
    assert_eq!(m.report()["postcopy"]["reconnects"], 1);
    assert!(
        dest.proc.stderr_text().contains("the source reconnected"),
        "{}",
        dest.proc.stderr_text()
    );
    assert_completed_on(&mut src, &mut dest, &m);
    drop(proxy);
}

/// docs/SAFETY.md row 19: the link stalls after the switch. The
/// destination's lease lapses with no renewal: it fences the VM (paused,
/// and says so), and no guest output follows until a renewal. When the
/// stalled connection is finally cut, the source reconnects, the fence is
/// lifted and the VM completes on the destination.
#[test]
fn a_stalled_link_in_post_copy_fences_the_destination_until_it_reconnects() {
    let _g = serial();
    let dir = TempDir::new("postcopy-stall");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "dst", &secret, &[]);
    let (mut m, proxy) = postcopy_through(&dir, &src, &dest, &secret, Action::Stall);
    wait_for("the destination to fence itself", PATIENCE, || {
        dest.proc
            .stderr_text()
            .contains("lease lapsed")
            .then_some(())
    });
    let at_fence = read_serial(&dest.serial).heartbeats.len();
    assert!(
        !dest.proc.stderr_text().contains("lease renewed"),
        "renewed through a stalled link"
    );
    assert_eq!(
        read_serial(&dest.serial).heartbeats.len(),
        at_fence,
        "guest output while fenced"
    );
    // End the stall as a cut: both sides see the link go, and reconnect.
    proxy.sever();
    let st = m.wait(PATIENCE * 2);
    assert_migrate_completed(st, &m);
    assert!(
        dest.proc.stderr_text().contains("lease renewed"),
        "{}",
        dest.proc.stderr_text()
    );
    assert_completed_on(&mut src, &mut dest, &m);
    drop(proxy);
}
