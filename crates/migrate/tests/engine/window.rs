//! The commit window under the lease (docs/PROTOCOL.md, "The commit
//! rule"): a pre-copy to a destination that takes leases and sends
//! transactions ends as a switch to post-copy with nothing to fetch, so a
//! lost Commit or Resumed has one outcome, never an operator's call.

use std::time::Duration;

use migrate::fake::{FakeFactory, FakeVm, RunState};
use migrate::faults::{Action, Dir, Fault, Spot};
use migrate::*;
use wire::kind;

use crate::harness::*;

fn leasing_factory() -> FakeFactory {
    FakeFactory {
        transactions: true,
        ..FakeFactory::default()
    }
}

/// Stop-and-copy through a proxy that cuts the first `k` frame going
/// `dir`; neither side tries to reconnect unless `recovery`.
fn cut_at(
    vm: &mut FakeVm,
    factory: &FakeFactory,
    dir: Dir,
    k: u8,
    recovery: bool,
) -> (Result<MigrationReport, Box<MigrationFailure>>, DestResult) {
    let mut opts = source_opts("downtime");
    let mut dopts = dest_opts(1 << 30);
    if !recovery {
        opts.recovery_timeout = Duration::ZERO;
        dopts.recovery_timeout = Duration::ZERO;
    }
    let fault = Fault::new(dir, k, Action::Cut).at(Spot::Before);
    run(vm, opts, factory.clone(), dopts, Some(fault))
}

/// The source took the VM back: it runs there again from the state at
/// the switch, and the destination (whether it ran or not) discarded.
fn assert_taken_back(
    vm: &FakeVm,
    res: &Result<MigrationReport, Box<MigrationFailure>>,
    d: &DestResult,
    factory: &FakeFactory,
) {
    let f = res.as_ref().expect_err("the migration must fail");
    assert!(
        matches!(f.report.outcome, Outcome::Recovered(_)),
        "{}",
        f.report.outcome
    );
    assert!(f.report.leased_commit, "{}", f.report);
    assert_eq!(f.report.vm_location, VmLocation::Source);
    assert_eq!(vm.run_state(), RunState::Running);
    assert!(vm.calls.contains(&"take_back"), "{:?}", vm.calls);
    // The VM runs here again without the migration's dirty log.
    let at = |c| vm.calls.iter().rposition(|&x| x == c).unwrap_or(usize::MAX);
    assert!(at("stop_dirty_log") < at("take_back"), "{:?}", vm.calls);
    let before = vm.writes();
    assert!(
        vm.wait_for_writes(before + 5, Duration::from_secs(10)),
        "the guest must run on the source again"
    );
    assert!(d.is_err(), "the destination must give the VM up");
    let log = factory.log();
    assert_eq!(log.discarded, 1, "{log:?}");
    assert!(!log.output_released, "output released by a fenced copy");
}

#[test]
fn a_leased_pre_copy_completes_like_any_pre_copy() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = leasing_factory();
    let (res, d) = run_default(&mut vm, "downtime", &factory);
    let r = check_success(&vm, res, d, &factory);
    assert!(r.leased_commit, "{r}");
    assert!(r.postcopy.is_none(), "{r}");
    let log = factory.log();
    assert_eq!((log.switched, log.postcopy_pages), (false, 0), "{log:?}");
    assert!(log.output_released, "FINAL releases the held output");
    assert!(!vm.calls.contains(&"take_back"), "{:?}", vm.calls);
}

#[test]
fn without_a_lease_or_transactions_the_window_stays_in_doubt() {
    // `--lease 0`, and a destination that cannot send transactions.
    for (lease, factory) in [
        (Duration::ZERO, leasing_factory()),
        (DEFAULT_LEASE, FakeFactory::default()),
    ] {
        let mut vm = FakeVm::new(busy_spec(8)).unwrap();
        let mut opts = source_opts("downtime");
        opts.lease = lease;
        let fault = Fault::new(Dir::ToDest, kind::COMMIT, Action::Cut).at(Spot::Before);
        let (res, d) = run(
            &mut vm,
            opts,
            factory.clone(),
            dest_opts(1 << 30),
            Some(fault),
        );
        let f = res.err().unwrap();
        assert!(!f.report.leased_commit);
        assert!(
            matches!(f.report.outcome, Outcome::InDoubt(_)),
            "{}",
            f.report.outcome
        );
        assert_eq!(vm.run_state(), RunState::Retired);
        assert!(d.is_err());
        assert_eq!(factory.log().resumed, 0);
    }
}

#[test]
fn commit_lost_the_source_takes_the_vm_back() {
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    let factory = leasing_factory();
    let (res, d) = cut_at(&mut vm, &factory, Dir::ToDest, kind::COMMIT, false);
    assert_taken_back(&vm, &res, &d, &factory);
    assert_eq!(factory.log().resumed, 0, "no Commit, no run");
}

#[test]
fn resumed_lost_the_destination_is_fenced_and_the_source_takes_the_vm_back() {
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    let factory = leasing_factory();
    let (res, d) = cut_at(&mut vm, &factory, Dir::ToSource, kind::RESUMED, false);
    assert_taken_back(&vm, &res, &d, &factory);
    assert_eq!(factory.log().resumed, 1, "it ran there under the lease");
}

/// A link back within the recovery timeout: the source reconnects, sends
/// Commit again, and the migration completes whichever of Commit or
/// Resumed was lost.
#[test]
fn a_link_back_in_time_completes_the_commit() {
    for (dir, k) in [(Dir::ToDest, kind::COMMIT), (Dir::ToSource, kind::RESUMED)] {
        let mut vm = FakeVm::new(busy_spec(8)).unwrap();
        let factory = leasing_factory();
        let (res, d) = cut_at(&mut vm, &factory, dir, k, true);
        let reconnects = d.as_ref().map_or(0, |r| r.report.reconnects);
        let r = check_success(&vm, res, d, &factory);
        assert!(r.leased_commit, "{r}");
        assert_eq!(reconnects, 1, "{r}");
        assert!(!vm.calls.contains(&"take_back"), "{:?}", vm.calls);
        assert!(factory.log().output_released);
    }
}

/// A true post-copy shares the window: Commit cut, the link back, the
/// source sends Commit again and then every page the destination lacks,
/// while the guest there faults on them.
#[test]
fn a_post_copy_commit_lost_is_sent_again_after_reconnecting() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory {
        touches: 300,
        touch_every: Duration::from_micros(200),
        ..leasing_factory()
    };
    let fault = Fault::new(Dir::ToDest, kind::COMMIT, Action::Cut).at(Spot::Before);
    let (res, d) = run(
        &mut vm,
        source_opts("postcopy"),
        factory.clone(),
        dest_opts(1 << 30),
        Some(fault),
    );
    let reconnects = d.as_ref().map_or(0, |r| r.report.reconnects);
    let r = check_success(&vm, res, d, &factory);
    assert!(!r.leased_commit, "{r}");
    let p = r.postcopy.as_ref().expect("a post-copy report");
    assert_eq!((p.reconnects, reconnects), (1, 1), "{r}");
}
