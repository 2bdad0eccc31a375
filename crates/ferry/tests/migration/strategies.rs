//! Rows 14 and 15 of docs/SAFETY.md: the strategies that hold pages back or
//! throttle the vCPUs (`predictive`, `delayed`, `auto-converge`) roll back
//! like the others, and auto-converge's throttle is real (the guest's own
//! rate counter shows it) and released on rollback and at the switchover.

use std::path::Path;

use crate::harness::*;
use crate::points::assert_rolled_back;

/// A migration with `args` through a proxy that cuts the connection in a
/// pre-copy round once progress shows round `round`.
fn cut_in_round(
    dir: &Path,
    src: &Vm,
    secret: &Path,
    name: &str,
    round: u64,
    args: &[&str],
) -> (Dest, Proxy, Proc) {
    let dest = Dest::start(dir, &format!("{name}-dst"), secret, &[]);
    let proxy = start_proxy(
        dest.socket_addr(),
        Fault::new(Dir::ToDest, PAGES, Action::Cut).disarmed(),
    );
    let m = src.start_migrate(
        dir,
        &format!("{name}-migrate"),
        &proxy.addr.to_string(),
        secret,
        args,
    );
    src.wait_progress(&format!("pre-copy round {round}"), |ph, r, _| {
        ph == "iterative" && r >= round
    });
    proxy.arm();
    wait_fired(&proxy);
    (dest, proxy, m)
}

/// docs/SAFETY.md row 14: a failure in a late pre-copy round rolls back.
#[test]
fn connection_cut_in_a_late_round_rolls_back_with_every_new_strategy() {
    let _g = serial();
    let dir = TempDir::new("newstrat");
    let secret = dir.secret("secret");
    let mut src = Vm::boot(dir.path(), "src");
    for strategy in ["predictive", "delayed", "auto-converge"] {
        // Enough rounds to fail in the third: min-pending=0 keeps the
        // Xen-based ones going, and Xen's increment must leave the guest's
        // 164 Mbit/s of dirtying under the 200 Mbit/s link, or Xen's rule
        // stops at once; auto-converge throttles from round 2.
        let params: &[&str] = match strategy {
            "auto-converge" => &["--strategy-param", "trigger-rounds=1"],
            "delayed" => &[
                "--strategy-param",
                "min-pending=0",
                "--strategy-param",
                "increment=10Mbit",
            ],
            _ => &["--strategy-param", "min-pending=0"],
        };
        let mut args = vec!["--strategy", strategy, "--max-bandwidth", SLOW];
        args.extend_from_slice(params);
        let (mut dest, _proxy, mut m) = cut_in_round(dir.path(), &src, &secret, strategy, 3, &args);
        assert_rolled_back(&mut src, &mut m, &mut dest, &[]);
        dest.assert_discarded(&["nothing runs here"]);
    }
    assert_retry_succeeds(dir.path(), &mut src, &secret);
}

/// docs/SAFETY.md row 15. The guest writes as fast as it can, so its rate
/// counter measures its time in the guest; a slow link it outruns makes
/// auto-converge throttle it at once to 90 %, then 99 %.
#[test]
fn auto_converge_throttle_shows_in_the_guest_and_is_released() {
    let _g = serial();
    let dir = TempDir::new("throttle");
    let secret = dir.secret("secret");
    let mut src = Vm::boot_with(dir.path(), "src", "ws=32M rate=0 verify=500ms");
    let free = src.guest_rate();
    assert!(free > 0, "the guest publishes no rate");
    let throttled = [
        "--strategy",
        "auto-converge",
        "--max-bandwidth",
        "100Mbit",
        "--strategy-param",
        "initial=90",
        "--strategy-param",
        "trigger-rounds=1",
    ];
    // Stalled in round 3, the throttle in force: the guest slows down
    // while the source waits out the stall timeout, then rolls back and
    // runs at full speed again.
    let mut dest = Dest::start(dir.path(), "rb-dst", &secret, &[]);
    let proxy = start_proxy(
        dest.socket_addr(),
        Fault::new(Dir::ToDest, PAGES, Action::Stall).disarmed(),
    );
    let mut m = src.start_migrate(
        dir.path(),
        "rb-migrate",
        &proxy.addr.to_string(),
        &secret,
        &throttled,
    );
    src.wait_progress("pre-copy round 3", |ph, r, _| ph == "iterative" && r >= 3);
    proxy.arm();
    wait_fired(&proxy);
    let slow = wait_for("the guest's rate to show the throttle", PATIENCE, || {
        assert!(m.alive(), "the stalled migration ended early");
        Some(src.guest_rate()).filter(|&r| r < free / 3)
    });
    assert_rolled_back(&mut src, &mut m, &mut dest, &["no progress"]);
    proxy.sever();
    dest.assert_discarded(&[]);
    let report = &src.migration().unwrap()["report"];
    let pct = |r: &serde_json::Value| r["throttle_pct"].as_f64().unwrap_or(0.0);
    let rounds = report["per_round"].as_array().unwrap();
    assert!(rounds.iter().any(|r| pct(r) >= 90.0), "{report}");
    let again = wait_for(
        "the rolled-back guest to run at full speed",
        PATIENCE,
        || Some(src.guest_rate()).filter(|&r| r > free / 2),
    );
    // Completed (forced after 3 rounds): the source released the throttle
    // at the pause, and the guest runs at full speed on the destination.
    let mut dest = Dest::start(dir.path(), "ok-dst", &secret, &[]);
    let mut args = throttled.to_vec();
    args.extend_from_slice(&["--strategy-param", "max-rounds=3"]);
    let mut m = src.start_migrate(dir.path(), "ok-migrate", &dest.addr, &secret, &args);
    let st = m.wait(PATIENCE * 2);
    assert!(st.success(), "migration failed: {}", m.stderr_text());
    let report: serde_json::Value = m.report();
    let rounds = report["per_round"].as_array().unwrap();
    assert!(rounds.iter().any(|r| pct(r) >= 90.0), "{report}");
    assert_eq!(pct(rounds.last().unwrap()), 0.0, "{report}");
    assert_completed_on(&mut src, &mut dest, &m);
    let there = wait_for(
        "the guest to run at full speed on the destination",
        PATIENCE,
        || Some(guest_rate(&dest.sock)).filter(|&r| r > free / 2),
    );
    eprintln!(
        "guest pages/s: free {free}, throttled {slow}, rolled back {again}, destination {there}"
    );
}
