//! The checks behind "exactly one copy of the VM runs and its integrity
//! check passes".

use std::path::Path;

use serde_json::Value;

use super::source::counter;
use super::{
    Dest, PATIENCE, Proc, Serial, Vm, assert_no_panic, holds_vm, read_serial, status, wait_for,
};

/// Exactly one copy of the VM is live among the source and destinations:
/// a live process whose API says it holds the VM.
pub fn assert_exactly_one(src: &mut Vm, dests: &mut [&mut Dest]) {
    let mut holders = Vec::new();
    if src.proc.alive()
        && let Some(s) = src.state().filter(|s| holds_vm(s))
    {
        holders.push(format!("source ({s})"));
    }
    for d in dests.iter_mut() {
        if d.proc.alive()
            && let Some(s) = d.state().filter(|s| holds_vm(s))
        {
            holders.push(format!("{} ({s})", d.proc.name));
        }
    }
    assert_eq!(holders.len(), 1, "copies of the VM: {holders:?}");
}

/// After a failed attempt, a retry to a fresh destination (unlimited
/// bandwidth) completes: the rolled-back VM is fully usable.
pub fn assert_retry_succeeds(dir: &Path, src: &mut Vm, secret: &Path) {
    let mut dest = Dest::start(dir, "retry-dst", secret, &[]);
    let mut m = src.start_migrate(
        dir,
        "retry-migrate",
        &dest.addr,
        secret,
        &["--strategy", "downtime"],
    );
    let st = m.wait(PATIENCE * 2);
    assert_migrate_completed(st, &m);
    assert_completed_on(src, &mut dest, &m);
}

/// `ferry migrate` (`m`, with `--json`) exited as a completed migration
/// does (docs/CLI.md): 0, or 3 when its report says the downtime target was
/// missed (a loaded machine may miss it; the VM moved all the same).
pub fn assert_migrate_completed(st: std::process::ExitStatus, m: &Proc) {
    let report: Value = m.report();
    let want = if report["downtime_target_missed"] == true {
        3
    } else {
        0
    };
    assert_eq!(
        st.code(),
        Some(want),
        "migrate: {}\n{report}",
        m.stderr_text()
    );
}

/// The migration `m` completed to `dest`: the report says so, the source
/// exits, the destination runs and verifies, heartbeats continue.
pub fn assert_completed_on(src: &mut Vm, dest: &mut Dest, m: &Proc) {
    let report: Value = m.report();
    assert_eq!(report["outcome"], "completed", "{report}");
    assert_eq!(report["vm_location"], "destination", "{report}");
    let st = src.proc.wait(PATIENCE);
    assert!(
        st.success(),
        "source exited {st}: {}",
        src.proc.stderr_text()
    );
    assert_no_panic("source", &src.proc.stderr_text());
    // The destination serves its API once its session ended, which in
    // post-copy is a message after the source's report (the final grant).
    assert_runs_and_verifies(dest);
    assert_exactly_one(src, &mut [dest]);
    let s = read_serial(&src.serial);
    let d = read_serial(&dest.serial);
    assert!(
        s.verify_fail.is_empty() && d.verify_fail.is_empty(),
        "{s:?} {d:?}"
    );
    let last = *s.heartbeats.last().expect("source heartbeats");
    let first = *d.heartbeats.first().expect("destination heartbeats");
    assert!(
        first <= last + 1 && first > 0,
        "heartbeat numbering has a gap: source ends at {last}, destination starts at {first}"
    );
    assert_one_after_other(&s, &d);
}

/// The guest never ran in both places at once: every heartbeat on the
/// source precedes every heartbeat on the destination (same host TSC).
pub fn assert_one_after_other(src: &Serial, dst: &Serial) {
    let src_last = src.heartbeat_tsc.iter().max().expect("source heartbeats");
    let dst_first = dst
        .heartbeat_tsc
        .iter()
        .min()
        .expect("destination heartbeats");
    assert!(
        src_last < dst_first,
        "the guest ran on both sides at once: source heartbeat at tsc {src_last}, destination at {dst_first}"
    );
}

/// The destination runs the VM and its guest has verified memory there:
/// its API answers `running` and the serial log shows VERIFY ok and
/// heartbeats (serial output is batched: wait for both), never a failure.
pub fn assert_runs_and_verifies(dest: &Dest) {
    wait_for("the destination to serve the running VM", PATIENCE, || {
        (dest.state().as_deref() == Some("running")).then_some(())
    });
    wait_for(
        "VERIFY ok and heartbeats on the destination",
        PATIENCE,
        || {
            let v = status(&dest.sock)?;
            assert_eq!(counter(&v, "verify_failures"), 0, "{v}");
            let log = read_serial(&dest.serial);
            (log.verify_ok >= 1 && !log.heartbeats.is_empty() && counter(&v, "verify_passes") >= 1)
                .then_some(())
        },
    );
}
