//! Post-copy with transaction synchronization (docs/SAFETY.md, rows 20-21):
//! the destination ships the pages the guest dirtied and its state back
//! every `--sync-interval`, holding serial output until the source has
//! them. Lose the destination (kill -9) or the link past the recovery
//! timeout, and the source, once the lease it granted has certainly run
//! out, resumes the VM from the latest transaction: its integrity check
//! passes, and its heartbeats go on strictly after every one the
//! destination printed (nothing printed there is repeated or contradicted).

use crate::harness::*;

/// Post-copy slow enough to still run when the fault comes (32 MiB at
/// 50 Mbit/s: about 5 s), with short leases and timeouts so the recovery
/// is quick.
const FLAGS: [&str; 10] = [
    "--strategy",
    "postcopy",
    "--link-bandwidth",
    "50Mbit",
    "--lease",
    "200ms",
    "--recovery-timeout",
    "1s",
    "--sync-interval",
    "100ms",
];

#[test]
fn a_destination_killed_in_post_copy_leaves_the_vm_running_on_the_source() {
    let _g = serial();
    let dir = TempDir::new("txn-dest-killed");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "dst", &secret, &[]);
    let mut m = src.start_migrate(dir.path(), "migrate", &dest.addr, &secret, &FLAGS);
    src.wait_progress("post-copy", |phase, _, _| phase == "postcopy");
    // Some transactions acknowledged: the destination printed heartbeats.
    wait_for("destination heartbeats", PATIENCE, || {
        (read_serial(&dest.serial).heartbeats.len() >= 3).then_some(())
    });
    dest.proc.kill();
    assert_resumed_on_source(&mut src, &dest, &mut m);
}

#[test]
fn a_link_down_past_the_recovery_timeout_fences_the_destination() {
    let _g = serial();
    let dir = TempDir::new("txn-link-down");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    let mut dest = Dest::start(dir.path(), "dst", &secret, &["--recovery-timeout", "1s"]);
    let fault = Fault::new(Dir::ToDest, PAGES, Action::Stall).disarmed();
    let proxy = start_proxy(dest.socket_addr(), fault);
    let mut m = src.start_migrate(
        dir.path(),
        "migrate",
        &proxy.addr.to_string(),
        &secret,
        &FLAGS,
    );
    src.wait_progress("post-copy", |phase, _, _| phase == "postcopy");
    wait_for("destination heartbeats", PATIENCE, || {
        (read_serial(&dest.serial).heartbeats.len() >= 3).then_some(())
    });
    proxy.arm();
    wait_fired(&proxy);
    // The link goes for good: connections closed, nobody listens.
    drop(proxy);
    dest.proc.assert_failed_with(PATIENCE, &["post-copy"]);
    let err = dest.proc.stderr_text();
    assert!(err.contains("lease lapsed"), "not fenced: {err}");
    assert_resumed_on_source(&mut src, &dest, &mut m);
}

/// `ferry migrate` reports the VM resumed on the source from a
/// transaction; the VM runs there, verifies, and its heartbeats follow the
/// destination's strictly.
fn assert_resumed_on_source(src: &mut Vm, dest: &Dest, m: &mut Proc) {
    let st = m.wait(PATIENCE * 2);
    let report = m.report();
    assert_eq!(st.code(), Some(1), "migrate: {}\n{report}", m.stderr_text());
    assert_eq!(report["vm_location"], "source", "{report}");
    assert!(
        report["postcopy"]["transactions"].as_u64() > Some(0),
        "no transaction applied: {report}"
    );
    let text = report["outcome"].to_string();
    assert!(
        text.contains("resumed on the source from transaction"),
        "{report}"
    );
    let d = read_serial(&dest.serial);
    let before = read_serial(&src.serial).heartbeats.len();
    wait_for("the source to run and verify again", PATIENCE, || {
        let v = status(&src.sock)?;
        assert_eq!(counter_of(&v, "verify_failures"), 0, "{v}");
        let s = read_serial(&src.serial);
        (s.heartbeats.len() >= before + 3 && s.verify_ok >= 2).then_some(())
    });
    let s = read_serial(&src.serial);
    assert!(
        s.verify_fail.is_empty() && d.verify_fail.is_empty(),
        "{s:?} {d:?}"
    );
    strictly_ordered(&s, &d);
}

fn counter_of(v: &serde_json::Value, name: &str) -> u64 {
    v["guest"][name].as_u64().unwrap_or(0)
}

/// Source heartbeats before the switch, then the destination's, then the
/// source's again: one strictly increasing sequence, no number twice.
fn strictly_ordered(s: &Serial, d: &Serial) {
    let inc = |v: &[u64]| v.windows(2).all(|w| w[0] < w[1]);
    let source = s.whole_against(d);
    assert!(inc(&source), "source heartbeats repeat: {source:?}");
    assert!(
        inc(&d.heartbeats),
        "destination heartbeats repeat: {:?}",
        d.heartbeats
    );
    let (Some(&lo), Some(&hi)) = (d.heartbeats.first(), d.heartbeats.last()) else {
        return;
    };
    let after: Vec<u64> = source.iter().copied().filter(|&h| h > hi).collect();
    assert!(
        !after.is_empty(),
        "no heartbeat on the source after the destination's {hi}"
    );
    assert!(
        source.iter().all(|&h| h < lo || h > hi),
        "the source printed a heartbeat in the destination's range {lo}..={hi}: {source:?}"
    );
}
