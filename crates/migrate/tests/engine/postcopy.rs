//! Post-copy and hybrid: identical memory with a guest faulting on the
//! destination, the switch asked by the strategy, a limit or the operator,
//! a destination that cannot, and failures after the switch.

use std::io::{BufReader, BufWriter};
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use migrate::fake::{FakeFactory, FakeSpec, FakeVm, RunState};
use migrate::faults::{Action, Dir, Fault, Spot};
use migrate::*;
use units::Bandwidth;
use vmstate::record::kind::PAGES;
use wire::{Accept, Message, MessageReader, MessageWriter, Offer, PageRequest, Resumed};

use crate::harness::*;

/// A destination whose fake guest reads random pages after resume.
fn faulting_factory() -> FakeFactory {
    FakeFactory {
        touches: 300,
        touch_every: Duration::from_micros(200),
        ..FakeFactory::default()
    }
}

#[test]
fn postcopy_and_hybrid_deliver_identical_memory_while_the_guest_faults() {
    for name in ["postcopy", "hybrid"] {
        let mut vm = FakeVm::new(busy_spec(16)).unwrap();
        assert!(vm.wait_for_writes(100, Duration::from_secs(5)));
        let factory = faulting_factory();
        let mut opts = match name {
            "hybrid" => switching_hybrid_opts(),
            _ => source_opts(name),
        };
        // Slow enough that the guest faults before the background is done.
        opts.link_bandwidth = Some(Bandwidth::parse("200Mbit").unwrap());
        let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
        let r = check_success(&vm, res, d, &factory);
        let p = r.postcopy.as_ref().expect("a post-copy report");
        assert_eq!(p.trigger, "strategy", "{r}");
        assert!(p.pages_to_fetch > 0, "{r}");
        assert_eq!(
            p.pages_requested + p.pages_pushed,
            p.pages_to_fetch,
            "every page of the set exactly once: {r}"
        );
        let log = factory.log();
        if name == "postcopy" {
            assert!(log.postcopy_waits > 0, "the guest never faulted: {log:?}");
            assert!(p.requests > 0 && p.faults > 0, "{r}");
            assert!(p.fault_p50_ms.is_some() && p.fault_p99_ms.is_some(), "{r}");
            // No rounds, so no dirty log to slow the guest before the switch.
            assert!(!vm.calls.contains(&"start_dirty_log"), "{:?}", vm.calls);
            assert_eq!(log.stale_pages, 0, "no rounds, nothing stale: {log:?}");
        } else {
            assert!(r.rounds >= 2, "hybrid runs pre-copy rounds first: {r}");
            // The copies the rounds made stale were forgotten before the
            // pause; identical memory shows each came again.
            assert!(log.stale_pages > 0, "{log:?}");
            // Logging stays on while the guest's first faults are served.
            let at = |c| vm.calls.iter().position(|&x| x == c).unwrap();
            assert!(at("release") < at("stop_dirty_log"), "{:?}", vm.calls);
        }
        assert!(r.bytes_received > 0);
        let text = r.to_string();
        assert!(
            text.contains("post-copy:") && text.contains("faults:"),
            "{text}"
        );
    }
}

#[test]
fn hybrid_sends_the_pages_dirtied_since_the_last_harvest_in_the_pause() {
    // A small, fast-written working set: the pause always finds some of
    // it dirty, never more than the prefetch takes.
    let mut spec = FakeSpec::new(16);
    spec.writes_per_sec = 20_000;
    spec.working_set_pages = 128;
    let mut vm = FakeVm::new(spec).unwrap();
    // Some always: the writer thread alone may not run between the last
    // harvest and the pause on a loaded machine.
    vm.faults.writes_at_pause = 8;
    assert!(vm.wait_for_writes(100, Duration::from_secs(5)));
    let factory = faulting_factory();
    let (res, d) = run(
        &mut vm,
        switching_hybrid_opts(),
        factory.clone(),
        dest_opts(1 << 30),
        None,
    );
    let r = check_success(&vm, res, d, &factory);
    let n = r.per_round.len();
    assert!(n >= 3, "{r}");
    let (prefetch, switch) = (&r.per_round[n - 2], &r.per_round[n - 1]);
    assert!(prefetch.stop_and_copy && switch.stop_and_copy, "{r}");
    assert!(
        (1..=128).contains(&(prefetch.pages_sent + prefetch.zero_pages)),
        "the pause sends what was dirtied since the last harvest: {r}"
    );
    let p = r.postcopy.as_ref().expect("a post-copy report");
    assert_eq!(p.pages_requested + p.pages_pushed, p.pages_to_fetch, "{r}");
}

#[test]
fn hybrid_to_a_destination_without_stale_sends_none_and_succeeds() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    assert!(vm.wait_for_writes(100, Duration::from_secs(5)));
    let factory = faulting_factory();
    let mut dopts = dest_opts(1 << 30);
    dopts.offer.capabilities =
        wire::Capabilities(wire::Capabilities::SUPPORTED.0 & !wire::Capabilities::STALE.0);
    let mut opts = switching_hybrid_opts();
    opts.link_bandwidth = Some(Bandwidth::parse("200Mbit").unwrap());
    let (res, d) = run(&mut vm, opts, factory.clone(), dopts, None);
    let r = check_success(&vm, res, d, &factory);
    assert!(r.postcopy.is_some(), "{r}");
    assert_eq!(factory.log().stale_pages, 0);
}

#[test]
fn a_destination_that_cannot_is_refused_before_anything_moves() {
    for (factory, offer) in [
        // The VMM there cannot intercept missing pages.
        (
            FakeFactory {
                no_postcopy: true,
                ..FakeFactory::default()
            },
            Offer::default(),
        ),
        // An older Ferry: protocol version 1 only.
        (
            FakeFactory::default(),
            Offer {
                max_version: 1,
                ..Offer::default()
            },
        ),
    ] {
        let mut vm = FakeVm::new(busy_spec(8)).unwrap();
        let mut dopts = dest_opts(1 << 30);
        dopts.offer = offer;
        let (res, d) = run(
            &mut vm,
            switching_hybrid_opts(),
            factory.clone(),
            dopts,
            None,
        );
        let e = assert_rolled_back(&vm, &res, &factory);
        assert!(e.contains("cannot run this VM in post-copy"), "{e}");
        assert!(d.is_err());
        assert!(!vm.calls.contains(&"pause"), "{:?}", vm.calls);
    }
}

#[test]
fn on_timeout_postcopy_switches_when_pre_copy_does_not_converge() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let mut opts = source_opts("downtime");
    opts.max_downtime = Duration::from_micros(1);
    opts.limits.max_rounds = Some(2);
    opts.on_timeout = OnTimeout::Postcopy;
    opts.link_bandwidth = Some(Bandwidth::parse("100Mbit").unwrap());
    let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
    let r = check_success(&vm, res, d, &factory);
    assert_eq!(
        r.postcopy.as_ref().map(|p| p.trigger.as_str()),
        Some("round limit"),
        "{r}"
    );
    // Two rounds, the prefetch if the pause found at most its share of
    // pages dirty, and the switch.
    let prefetched = r.per_round.iter().filter(|x| x.stop_and_copy).count() == 2;
    assert_eq!(r.rounds, 3 + prefetched as u32, "{r}");
}

#[test]
fn the_operator_switches_a_running_pre_copy() {
    let mut vm = FakeVm::new(busy_spec(32)).unwrap();
    let factory = FakeFactory::default();
    let mut opts = source_opts("downtime");
    // Slow and never converging: only the operator ends it.
    opts.max_downtime = Duration::from_micros(1);
    opts.link_bandwidth = Some(Bandwidth::parse("100Mbit").unwrap());
    let switch = opts.postcopy_switch.clone();
    let progress = opts.progress.clone();
    let operator = thread::spawn(move || {
        testkit::wait_for("pre-copy", Duration::from_secs(10), || {
            (progress.snapshot().phase == Phase::Iterative).then_some(())
        });
        thread::sleep(Duration::from_millis(200));
        switch.request().unwrap();
    });
    let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
    operator.join().unwrap();
    let r = check_success(&vm, res, d, &factory);
    assert_eq!(r.postcopy.as_ref().unwrap().trigger, "operator", "{r}");
}

/// With no recovery allowed, a cut after the switch is not survived: the
/// VM stays paused and retired here, and the destination discards its copy.
#[test]
fn a_cut_after_the_switch_without_recovery_leaves_the_vm_paused_here() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let fault = Fault::new(Dir::ToDest, PAGES, Action::Cut)
        .nth(20)
        .at(Spot::Before);
    let mut opts = source_opts("postcopy");
    opts.link_bandwidth = Some(Bandwidth::parse("100Mbit").unwrap());
    opts.recovery_timeout = Duration::ZERO;
    let mut dopts = dest_opts(1 << 30);
    dopts.recovery_timeout = Duration::ZERO;
    let (res, d) = run(&mut vm, opts, factory.clone(), dopts, Some(fault));
    let fail = res.expect_err("post-copy must fail");
    assert!(
        matches!(fail.report.outcome, Outcome::Interrupted(_)),
        "{}",
        fail.report
    );
    assert_eq!(fail.report.vm_location, VmLocation::Nowhere);
    // Never resumed here: the VM ran on the destination after the switch.
    assert_eq!(vm.run_state(), RunState::Retired);
    assert!(!vm.calls.contains(&"resume"), "{:?}", vm.calls);
    assert!(!vm.calls.contains(&"release"), "{:?}", vm.calls);
    // The destination gave it up.
    assert!(d.is_err());
    let log = factory.log();
    assert_eq!((log.resumed, log.discarded), (1, 1), "{log:?}");
}

/// A cut after the switch (inside a Pages frame): the source reconnects
/// (authenticated again, same migration), learns which pages the
/// destination holds, sends the rest, and the migration completes with
/// identical memory while the guest faults.
#[test]
fn a_cut_after_the_switch_is_survived_by_reconnecting() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = faulting_factory();
    let fault = Fault::new(Dir::ToDest, PAGES, Action::Cut)
        .nth(20)
        .at(Spot::Inside);
    let mut opts = source_opts("postcopy");
    opts.link_bandwidth = Some(Bandwidth::parse("100Mbit").unwrap());
    let (res, d) = run(
        &mut vm,
        opts,
        factory.clone(),
        dest_opts(1 << 30),
        Some(fault),
    );
    let dest_reconnects = d.as_ref().map_or(0, |r| r.report.reconnects);
    let r = check_success(&vm, res, d, &factory);
    let p = r.postcopy.as_ref().expect("a post-copy report");
    assert_eq!(p.reconnects, 1, "{r}");
    assert_eq!(dest_reconnects, 1);
}

/// A link that stalls after the switch: the destination's lease runs out
/// with no renewal and it fences the VM; once the stall timeouts end the
/// old link the source reconnects, a grant lifts the fence, and the
/// migration completes.
#[test]
fn a_stall_after_the_switch_fences_the_destination_until_it_reconnects() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let fault = Fault::new(Dir::ToDest, PAGES, Action::Stall)
        .nth(20)
        .at(Spot::Before);
    let mut opts = source_opts("postcopy");
    opts.link_bandwidth = Some(Bandwidth::parse("100Mbit").unwrap());
    opts.lease = Duration::from_millis(200);
    let (res, d) = run(
        &mut vm,
        opts,
        factory.clone(),
        dest_opts(1 << 30),
        Some(fault),
    );
    let r = check_success(&vm, res, d, &factory);
    assert_eq!(r.postcopy.as_ref().map(|p| p.reconnects), Some(1), "{r}");
    let log = factory.log();
    assert!(log.fenced >= 1, "the destination never fenced: {log:?}");
    assert!(log.lifted >= 1, "the fence was never lifted: {log:?}");
}

/// Without recovery, a stall fences the destination and the source, once
/// the lease has surely run out, reports the VM as running nowhere.
#[test]
fn a_stall_without_recovery_fences_and_reports_nowhere() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let fault = Fault::new(Dir::ToDest, PAGES, Action::Stall)
        .nth(20)
        .at(Spot::Before);
    let mut opts = source_opts("postcopy");
    opts.link_bandwidth = Some(Bandwidth::parse("100Mbit").unwrap());
    opts.lease = Duration::from_millis(200);
    opts.recovery_timeout = Duration::ZERO;
    let mut dopts = dest_opts(1 << 30);
    dopts.recovery_timeout = Duration::ZERO;
    let (res, d) = run(&mut vm, opts, factory.clone(), dopts, Some(fault));
    let fail = res.expect_err("post-copy must fail");
    let text = fail.report.outcome.to_string();
    assert!(text.contains("lease ran out"), "{text}");
    assert_eq!(fail.report.vm_location, VmLocation::Nowhere);
    assert!(!vm.calls.contains(&"resume"), "{:?}", vm.calls);
    assert!(d.is_err());
    let log = factory.log();
    assert!(log.fenced >= 1, "the destination never fenced: {log:?}");
    assert_eq!((log.resumed, log.discarded), (1, 1), "{log:?}");
}

/// A destination that follows the protocol up to the resume, then asks for
/// a page outside guest memory: the source refuses with one error and keeps
/// the VM paused.
#[test]
fn a_request_outside_guest_memory_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dest = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let session = wire::dest_handshake(&mut s, &secret(), &Offer::default()).unwrap();
        assert!(session.capabilities.contains(wire::Capabilities::POSTCOPY));
        let mut r = MessageReader::new(BufReader::new(s.try_clone().unwrap()));
        let mut w = MessageWriter::new(BufWriter::new(s));
        let next = |r: &mut MessageReader<_>| r.next("test").unwrap().name();
        assert_eq!(next(&mut r), "Start");
        w.accept(&Accept {
            flags: Accept::POSTCOPY,
        })
        .unwrap();
        w.flush().unwrap();
        assert_eq!(next(&mut r), "PostcopyBegin");
        assert_eq!(next(&mut r), "State");
        w.ready().unwrap();
        w.flush().unwrap();
        assert_eq!(next(&mut r), "Commit");
        w.resumed(&Resumed {
            commit_to_resume_ns: 1,
            resumed_unix_ns: 1,
        })
        .unwrap();
        w.page_request(&PageRequest {
            gpa: 1 << 40,
            pages: 1,
        })
        .unwrap();
        w.flush().unwrap();
        loop {
            match r.next("test") {
                Ok(Message::Abort(a)) => return a.message,
                Ok(_) => continue,
                Err(e) => panic!("no Abort: {e}"),
            }
        }
    });
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    let mut opts = source_opts("postcopy");
    opts.link_bandwidth = Some(Bandwidth::parse("50Mbit").unwrap());
    let fail = migrate(&mut vm, &addr.to_string(), opts).unwrap_err();
    let told = dest.join().unwrap();
    assert!(told.contains("outside guest memory"), "{told}");
    assert!(fail.error.to_string().contains("outside guest memory"));
    assert_eq!(fail.report.vm_location, VmLocation::Nowhere);
    assert_eq!(vm.run_state(), RunState::Retired);
}
