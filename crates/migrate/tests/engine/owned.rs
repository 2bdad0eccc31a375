//! The last round trip of a leased post-copy: the source's final grant and
//! the destination's Owned. Either may be lost; the VM is never left
//! running nowhere while the link can come back, and the source never
//! frees or resumes its copy before it knows.

use std::time::Duration;

use migrate::fake::{FakeFactory, FakeVm, RunState};
use migrate::faults::{Action, Dir, Fault, Spot};
use migrate::*;
use units::Bandwidth;
use wire::kind;

use crate::harness::*;

/// A post-copy through a proxy that applies `fault`.
fn postcopy_with(
    vm: &mut FakeVm,
    factory: &FakeFactory,
    fault: Fault,
    recovery: bool,
) -> (Result<MigrationReport, Box<MigrationFailure>>, DestResult) {
    let mut opts = source_opts("postcopy");
    opts.link_bandwidth = Some(Bandwidth::parse("1Gbit").unwrap());
    opts.lease = Duration::from_millis(200);
    let mut dopts = dest_opts(1 << 30);
    if !recovery {
        opts.recovery_timeout = Duration::ZERO;
        dopts.recovery_timeout = Duration::ZERO;
    }
    run(vm, opts, factory.clone(), dopts, Some(fault))
}

/// The final grant (the LeaseGrant answering request 0).
fn final_grant_lost() -> Fault {
    Fault::new(Dir::ToDest, kind::LEASE_GRANT, Action::Cut)
        .starting_with(0)
        .at(Spot::Before)
}

/// The link breaks as the source's final grant goes out, so it is lost: the destination, fenced at its lease's end, waits; the
/// source comes back, ends again, and the grant arrives the second time.
#[test]
fn a_lost_final_grant_is_sent_again_after_reconnecting() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let (res, d) = postcopy_with(&mut vm, &factory, final_grant_lost(), true);
    let dest = d.as_ref().map(|r| r.report.clone()).ok();
    let r = check_success(&vm, res, d, &factory);
    let dest = dest.expect("the destination's report");
    assert!(dest.owned, "{dest:?}");
    assert_eq!(dest.reconnects, 1, "{dest:?}");
    assert_eq!(r.postcopy.as_ref().map(|p| p.reconnects), Some(1), "{r}");
    assert!(vm.calls.contains(&"release"), "{:?}", vm.calls);
}

/// The destination's Owned is lost: the source, which kept its copy, comes
/// back and is told again by the destination, which runs the VM already.
#[test]
fn a_lost_owned_is_told_again_by_the_destination() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let fault = Fault::new(Dir::ToSource, kind::OWNED, Action::Cut).at(Spot::Before);
    let (res, d) = postcopy_with(&mut vm, &factory, fault, true);
    let dest = d.as_ref().map(|r| r.report.clone()).ok();
    let r = check_success(&vm, res, d, &factory);
    assert!(dest.is_some_and(|d| d.owned && d.reconnects == 0));
    assert_eq!(r.outcome, Outcome::Completed);
    assert!(vm.calls.contains(&"release"), "{:?}", vm.calls);
}

/// With no reconnection allowed, a lost final grant leaves the source in
/// doubt: it keeps its copy paused (never frees it, never resumes it),
/// since the destination may own the VM; the destination, never told it
/// does, gives its fenced copy up.
#[test]
fn with_no_way_back_after_the_final_grant_the_source_keeps_its_copy() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let (res, d) = postcopy_with(&mut vm, &factory, final_grant_lost(), false);
    let fail = res.expect_err("the source cannot know where the VM is");
    assert!(
        matches!(fail.report.outcome, Outcome::InDoubt(_)),
        "{}",
        fail.report.outcome
    );
    assert_eq!(fail.report.vm_location, VmLocation::Unknown);
    assert_eq!(vm.run_state(), RunState::Retired);
    for call in ["release", "take_back", "resume"] {
        assert!(!vm.calls.contains(&call), "{call}: {:?}", vm.calls);
    }
    assert!(d.is_err(), "the destination never heard the grant");
    let log = factory.log();
    assert_eq!((log.resumed, log.discarded), (1, 1), "{log:?}");
    assert!(!log.output_released, "{log:?}");
}

/// A final grant corrupted on the way: the destination refuses it and
/// aborts, which it never does once it owns the VM; so the source, once
/// the lease has run out, takes the VM back (a leased pre-copy here).
#[test]
fn a_corrupt_final_grant_is_refused_and_the_source_takes_the_vm_back() {
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    let factory = FakeFactory {
        transactions: true,
        ..FakeFactory::default()
    };
    let fault = Fault::new(Dir::ToDest, kind::LEASE_GRANT, Action::Corrupt)
        .starting_with(0)
        .at(Spot::Inside);
    let mut opts = source_opts("downtime");
    opts.lease = Duration::from_millis(200);
    let (res, d) = run(
        &mut vm,
        opts,
        factory.clone(),
        dest_opts(1 << 30),
        Some(fault),
    );
    let fail = res.expect_err("the destination refused the grant");
    assert!(fail.report.leased_commit, "{}", fail.report);
    assert!(
        matches!(fail.report.outcome, Outcome::Recovered(_)),
        "{}",
        fail.report.outcome
    );
    assert_eq!(fail.report.vm_location, VmLocation::Source);
    assert!(vm.calls.contains(&"take_back"), "{:?}", vm.calls);
    assert!(d.is_err());
    let log = factory.log();
    assert_eq!(log.discarded, 1, "{log:?}");
    assert!(!log.output_released, "{log:?}");
}
