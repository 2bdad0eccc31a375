//! Network faults injected by `migrate::faults` at chosen frames: cut,
//! stalled, corrupted, in both directions, up to the commit window.

use std::time::Duration;

use migrate::fake::{FakeFactory, FakeVm, RunState, first_difference};
use migrate::faults::{Action, Dir, Fault, Spot};
use migrate::*;
use vmstate::record::kind::PAGES;
use wire::kind;

use crate::harness::*;

#[test]
fn connection_cut_during_rounds() {
    for strategy in ["xen", "downtime"] {
        let mut vm = FakeVm::new(busy_spec(16)).unwrap();
        let factory = FakeFactory::default();
        let fault = Fault::new(Dir::ToDest, PAGES, Action::Cut)
            .nth(5)
            .at(Spot::Before);
        let (res, d) = run(
            &mut vm,
            source_opts(strategy),
            factory.clone(),
            dest_opts(1 << 30),
            Some(fault),
        );
        assert_rolled_back(&vm, &res, &factory);
        assert!(d.is_err());
        assert!(!vm.calls.contains(&"pause"), "{:?}", vm.calls);
        let report = &res.as_ref().unwrap_err().report;
        assert!(report.per_round.last().unwrap().interrupted, "{report}");
    }
}

#[test]
fn destination_stalls() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let fault = Fault::new(Dir::ToDest, PAGES, Action::Stall)
        .nth(3)
        .at(Spot::Before);
    let mut opts = source_opts("downtime");
    opts.stall_timeout = Duration::from_millis(800);
    let (res, d) = run(
        &mut vm,
        opts,
        factory.clone(),
        dest_opts(1 << 30),
        Some(fault),
    );
    let e = assert_rolled_back(&vm, &res, &factory);
    assert!(e.contains("no progress"), "{e}");
    assert!(d.is_err());
}

#[test]
fn corrupted_page_frame_is_detected() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let (res, d) = run_faulted(&mut vm, &factory, Dir::ToDest, PAGES, 2, Action::Corrupt);
    let e = assert_rolled_back(&vm, &res, &factory);
    assert!(e.contains("checksum"), "{e}");
    let de = d.err().unwrap().to_string();
    assert!(de.contains("checksum"), "{de}");
}

#[test]
fn corrupted_reply_is_detected() {
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    let factory = FakeFactory::default();
    let (res, d) = run_faulted(
        &mut vm,
        &factory,
        Dir::ToSource,
        kind::ACCEPT,
        1,
        Action::Corrupt,
    );
    let e = assert_rolled_back(&vm, &res, &factory);
    assert!(e.contains("checksum"), "{e}");
    assert!(d.is_err());
}

#[test]
fn ready_lost_before_commit_rolls_back() {
    // The VM is paused when the connection dies: it must resume on the source.
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let (res, d) = run_faulted(
        &mut vm,
        &factory,
        Dir::ToSource,
        kind::READY,
        1,
        Action::Cut,
    );
    assert_rolled_back(&vm, &res, &factory);
    assert!(
        vm.calls.contains(&"pause") && vm.calls.contains(&"resume"),
        "{:?}",
        vm.calls
    );
    assert!(!vm.calls.contains(&"retire"));
    let de = d.err().unwrap().to_string();
    assert!(de.contains("Commit"), "{de}");
    assert_eq!(factory.log().restored, 1);
    let before = vm.writes();
    assert!(
        vm.wait_for_writes(before + 10, Duration::from_secs(5)),
        "guest must keep running"
    );
}

#[test]
fn commit_lost_leaves_the_vm_nowhere_but_never_twice() {
    // The in-doubt window: Commit written by the source but never delivered.
    // The source never runs the VM again; the destination never starts it.
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    let factory = FakeFactory::default();
    let (res, d) = run_faulted(&mut vm, &factory, Dir::ToDest, kind::COMMIT, 1, Action::Cut);
    let f = res.err().unwrap();
    assert!(
        matches!(f.report.outcome, Outcome::InDoubt(_)),
        "{}",
        f.report.outcome
    );
    assert_eq!(f.report.vm_location, VmLocation::Unknown);
    assert_eq!(vm.run_state(), RunState::Retired);
    assert!(!vm.calls.contains(&"resume"));
    assert!(d.is_err());
    let log = factory.log();
    assert_eq!((log.resumed, log.discarded), (0, 1), "{log:?}");
}

#[test]
fn lost_acknowledgement_leaves_the_vm_on_the_destination() {
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    let factory = FakeFactory::default();
    let (res, d) = run_faulted(
        &mut vm,
        &factory,
        Dir::ToSource,
        kind::RESUMED,
        1,
        Action::Cut,
    );
    let f = res.err().unwrap();
    assert!(matches!(f.report.outcome, Outcome::InDoubt(_)));
    assert_eq!(vm.run_state(), RunState::Retired);
    assert!(!vm.calls.contains(&"resume"));
    let received = d.expect("the destination committed");
    let log = factory.log();
    assert_eq!((log.resumed, log.discarded), (1, 0));
    assert_eq!(
        first_difference(vm.memory(), received.vm.memory(), &vm.config().regions),
        None
    );
}

#[test]
fn a_paused_vm_stays_paused_on_both_outcomes() {
    // Completed: it arrives paused.
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    vm.pause().unwrap();
    let factory = FakeFactory::default();
    let (daddr, dest) = start_dest(factory.clone(), dest_opts(1 << 30));
    let r = migrate(&mut vm, &daddr.to_string(), source_opts("downtime")).unwrap();
    let received = dest.join().unwrap().unwrap();
    assert_eq!(r.outcome, Outcome::Completed);
    assert!(!received.report.running);
    let log = factory.log();
    assert_eq!((log.restored, log.resumed), (1, 0), "{log:?}");
    assert_eq!(
        first_difference(vm.memory(), received.vm.memory(), &vm.config().regions),
        None
    );

    // Failed: it stays paused on the source.
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    vm.pause().unwrap();
    let factory = FakeFactory::default();
    let fault = Fault::new(Dir::ToSource, kind::READY, Action::Cut).at(Spot::Before);
    let (res, _d) = run(
        &mut vm,
        source_opts("downtime"),
        factory.clone(),
        dest_opts(1 << 30),
        Some(fault),
    );
    assert!(res.is_err());
    assert_eq!(vm.run_state(), RunState::Paused);
    assert!(!vm.calls[1..].contains(&"resume"), "{:?}", vm.calls);
    assert_eq!(factory.log().resumed, 0);
}

/// Before the switchover the source waits for the destination to apply
/// the stream (Drain): a Drain or its answer lost rolls back like any cut
/// before the pause, and the VM was never paused.
#[test]
fn a_cut_at_the_drain_rolls_back_before_the_pause() {
    for (dir, k) in [(Dir::ToDest, kind::DRAIN), (Dir::ToSource, kind::DRAINED)] {
        let mut vm = FakeVm::new(busy_spec(16)).unwrap();
        let factory = FakeFactory::default();
        let (res, d) = run_faulted(&mut vm, &factory, dir, k, 1, Action::Cut);
        assert_rolled_back(&vm, &res, &factory);
        assert!(d.is_err());
        assert!(!vm.calls.contains(&"pause"), "{:?}", vm.calls);
    }
}

/// A destination that does not offer Drain (an older Ferry) still takes
/// the VM, and is never sent one: a cut armed at a Drain never fires.
#[test]
fn a_destination_without_drain_still_migrates() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let mut dopts = dest_opts(1 << 30);
    dopts.offer.capabilities = wire::Capabilities::POSTCOPY;
    let (daddr, dest) = start_dest(factory.clone(), dopts);
    let fault = Fault::new(Dir::ToDest, kind::DRAIN, Action::Cut).at(Spot::Before);
    let proxy = migrate::faults::Proxy::start(daddr, Some(fault)).unwrap();
    let res = migrate(&mut vm, &proxy.addr.to_string(), source_opts("downtime"));
    let d = dest.join().unwrap();
    assert!(
        !proxy.fired(),
        "a Drain went to a destination without DRAIN"
    );
    check_success(&vm, res, d, &factory);
}
