//! The engine end to end over loopback TCP, with the in-memory fake VM:
//! every strategy converges to an identical copy, and every injected failure
//! leaves exactly the expected copy of the VM running.

mod common;

use std::time::Duration;

use common::*;
use migrate::fake::{FakeFactory, FakeSpec, FakeVm, RunState, WritePattern, first_difference};
use migrate::faults::{Action, Dir, Fault, Proxy};
use migrate::*;
use units::Bandwidth;
use wire::{AbortCode, Offer, kind};

const MIB: u64 = 1 << 20;

fn busy_spec(mib: u64) -> FakeSpec {
    let mut s = FakeSpec::new(mib);
    s.writes_per_sec = 3000;
    s.working_set_pages = 1024;
    s
}

fn source_opts(strategy: &str) -> SourceOptions {
    let mut o = SourceOptions::new(secret(), strategy.parse::<StrategyKind>().unwrap().build());
    o.stall_timeout = Duration::from_secs(2);
    o.connect_timeout = Duration::from_secs(2);
    o
}

/// Migrates `vm` to a fresh fake destination; returns both sides' results.
fn run(
    vm: &mut FakeVm,
    opts: SourceOptions,
    factory: FakeFactory,
    dopts: DestOptions,
    fault: Option<Fault>,
) -> (Result<MigrationReport, Box<MigrationFailure>>, DestResult) {
    let (daddr, dest) = start_dest(factory, dopts);
    let proxy = Proxy::start(daddr, fault).unwrap();
    let res = migrate(vm, &proxy.addr.to_string(), opts);
    let d = dest.join().unwrap();
    if let Err(e) = &d {
        eprintln!("destination error: {e}");
    }
    if fault.is_some() {
        assert!(proxy.fired(), "the fault was never injected");
    }
    drop(proxy);
    (res, d)
}

/// Migrates with `strategy`, default options and no fault.
fn run_default(
    vm: &mut FakeVm,
    strategy: &str,
    factory: &FakeFactory,
) -> (Result<MigrationReport, Box<MigrationFailure>>, DestResult) {
    run(
        vm,
        source_opts(strategy),
        factory.clone(),
        dest_opts(1 << 30),
        None,
    )
}

/// Migrates with the `downtime` strategy through a proxy that applies
/// `action` to the `nth` frame of `kind` going in `dir`.
fn run_faulted(
    vm: &mut FakeVm,
    factory: &FakeFactory,
    dir: Dir,
    kind: u8,
    nth: u32,
    action: Action,
) -> (Result<MigrationReport, Box<MigrationFailure>>, DestResult) {
    let fault = Fault {
        dir,
        kind,
        nth,
        action,
    };
    run(
        vm,
        source_opts("downtime"),
        factory.clone(),
        dest_opts(1 << 30),
        Some(fault),
    )
}

/// The source kept the VM: it runs, nothing ran on the destination.
fn assert_rolled_back(
    vm: &FakeVm,
    res: &Result<MigrationReport, Box<MigrationFailure>>,
    factory: &FakeFactory,
) -> String {
    let fail = res.as_ref().expect_err("migration must fail");
    assert_eq!(
        vm.run_state(),
        RunState::Running,
        "VM must run on the source"
    );
    assert_eq!(fail.report.vm_location, VmLocation::Source);
    assert!(
        matches!(fail.report.outcome, Outcome::Failed(_) | Outcome::Cancelled),
        "{:?}",
        fail.report.outcome
    );
    let log = factory.log();
    assert_eq!(
        log.resumed, 0,
        "nothing may run on the destination: {log:?}"
    );
    assert_eq!(
        log.created, log.discarded,
        "destination must discard: {log:?}"
    );
    if vm.calls.contains(&"start_dirty_log") {
        assert!(vm.calls.contains(&"stop_dirty_log"), "{:?}", vm.calls);
    }
    // The guest still runs: it keeps writing.
    let before = vm.writes();
    assert!(
        vm.wait_for_writes(before + 5, Duration::from_secs(10)),
        "the guest must keep running on the source"
    );
    eprintln!("source error: {}", fail.error);
    fail.error.to_string()
}

fn check_success(
    vm: &FakeVm,
    res: Result<MigrationReport, Box<MigrationFailure>>,
    d: DestResult,
    factory: &FakeFactory,
) -> MigrationReport {
    let report = match res {
        Ok(r) => r,
        Err(f) => panic!("migration failed: {}\n{}", f.error, f.report),
    };
    let received = d.expect("destination must succeed");
    assert_eq!(report.outcome, Outcome::Completed);
    assert_eq!(report.vm_location, VmLocation::Destination);
    assert_eq!(vm.run_state(), RunState::Retired);
    let log = factory.log();
    assert_eq!(
        (log.created, log.restored, log.resumed, log.discarded),
        (1, 1, 1, 0),
        "{log:?}"
    );
    assert!(!log.resumed_before_restore);
    assert_eq!(log.state_token.as_deref(), Some(&vm.state_token()[..]));
    let regions = vm.config().regions;
    assert_eq!(
        first_difference(vm.memory(), received.vm.memory(), &regions),
        None,
        "destination memory differs from the source's at pause"
    );
    assert!(report.per_round.last().unwrap().stop_and_copy);
    assert!(report.downtime_ms.is_some());
    assert!(report.bytes_sent > 0);
    assert_eq!(received.report.rounds, report.rounds);
    assert_eq!(received.report.pages, report.pages_sent);
    report
}

#[test]
fn every_strategy_converges_to_an_identical_copy() {
    for name in STRATEGIES {
        let mut vm = FakeVm::new(busy_spec(32)).unwrap();
        assert!(vm.wait_for_writes(100, Duration::from_secs(5)));
        let factory = FakeFactory::default();
        let (res, d) = run(
            &mut vm,
            source_opts(name),
            factory.clone(),
            dest_opts(1 << 30),
            None,
        );
        let r = check_success(&vm, res, d, &factory);
        // At least the prefilled quarter of memory went over.
        assert!(r.pages_sent >= 32 * 256 / 4, "{name}: {r}");
        if *name == "stop-and-copy" {
            assert_eq!(r.rounds, 1, "{r}");
        } else {
            assert!(r.rounds >= 2, "{name}: {r}");
        }
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["strategy"], *name);
        assert_eq!(json["outcome"], "completed");
    }
}

#[test]
fn bandwidth_cap_and_zero_pages() {
    // 8 MiB, 2 regions, mostly zero, a cap: the cap is honoured on average and
    // zero pages never travel as data.
    let mut spec = FakeSpec::new(8);
    spec.regions = vec![(0, 4 * MIB), (1 << 32, 4 * MIB)];
    spec.prefill_pages = 300;
    spec.working_set_pages = 64;
    spec.writes_per_sec = 500;
    spec.pattern = WritePattern::HotSet {
        hot_fraction: 0.1,
        hot_share: 0.9,
    };
    let mut vm = FakeVm::new(spec).unwrap();
    let factory = FakeFactory::default();
    let mut opts = source_opts("downtime");
    opts.max_bandwidth = Some(Bandwidth::parse("40Mbit").unwrap());
    let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
    let r = check_success(&vm, res, d, &factory);
    let first = &r.per_round[0];
    assert_eq!(first.pages_pending, 2048);
    assert!(first.zero_pages >= 2048 - 300 - 64, "{r}");
    assert!(r.pages_sent < 2048, "{r}");
    assert!(
        r.bytes_sent < 2048 * 4096,
        "zero pages must not be sent as data: {r}"
    );
    // Throughput over the whole run cannot exceed the cap by more than one burst.
    let secs: f64 = r.per_round.iter().map(|x| x.duration_ms).sum::<f64>() / 1000.0;
    assert!(
        (r.bytes_sent as f64) <= 5e6 * secs + 256.0 * 1024.0 + 65536.0,
        "cap exceeded: {r}"
    );
}

#[test]
fn an_initially_all_dirty_log_does_not_resend_memory() {
    let mut spec = busy_spec(16);
    spec.initially_all_dirty = true;
    let mut vm = FakeVm::new(spec).unwrap();
    let factory = FakeFactory::default();
    let (res, d) = run_default(&mut vm, "xen", &factory);
    let r = check_success(&vm, res, d, &factory);
    // Only what the guest wrote (its 1024-page working set) is pending after round 1.
    assert!(r.per_round[1].pages_pending <= 1024, "{r}");
}

#[test]
fn nonzero_hint_skips_untouched_pages() {
    let mut spec = FakeSpec::new(16);
    spec.nonzero_hint = true;
    spec.writes_per_sec = 1000;
    let mut vm = FakeVm::new(spec).unwrap();
    let factory = FakeFactory::default();
    let (res, d) = run_default(&mut vm, "xen", &factory);
    let r = check_success(&vm, res, d, &factory);
    assert!(r.per_round[0].zero_pages >= 16 * 256 * 3 / 4 - 512, "{r}");
}

#[test]
fn wrong_secret_is_refused_on_both_sides() {
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    let factory = FakeFactory::default();
    let mut opts = source_opts("xen");
    opts.secret = Secret::from_bytes(b"some other secret of 32 bytes!!!").unwrap();
    let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
    let e = assert_rolled_back(&vm, &res, &factory);
    assert!(e.contains("authentication failed"), "{e}");
    let de = d.err().unwrap().to_string();
    assert!(de.contains("authentication failed"), "{de}");
    assert_eq!(factory.log().created, 0);
    assert!(!vm.calls.contains(&"pause"));
}

#[test]
fn wrong_version_is_refused_on_both_sides() {
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    let factory = FakeFactory::default();
    let mut opts = source_opts("xen");
    opts.offer = Offer {
        min_version: 7,
        max_version: 9,
        ..Offer::default()
    };
    let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
    let e = assert_rolled_back(&vm, &res, &factory);
    assert!(e.contains("version mismatch") && e.contains("7..=9"), "{e}");
    let de = d.err().unwrap().to_string();
    assert!(de.contains("version mismatch"), "{de}");
}

#[test]
fn too_much_memory_is_refused() {
    let mut vm = FakeVm::new(busy_spec(32)).unwrap();
    let factory = FakeFactory::default();
    let (res, d) = run(
        &mut vm,
        source_opts("xen"),
        factory.clone(),
        dest_opts(16 * MIB),
        None,
    );
    let e = assert_rolled_back(&vm, &res, &factory);
    assert!(e.contains("refused") && e.contains("--max-memory"), "{e}");
    match &res.as_ref().err().unwrap().error {
        MigrateError::Refused { code, .. } => assert_eq!(*code, AbortCode::MemoryLimit),
        other => panic!("{other}"),
    }
    assert!(matches!(d, Err(MigrateError::MemoryLimit { .. })));
    assert_eq!(factory.log().created, 0);
    assert!(!vm.calls.contains(&"start_dirty_log"));
}

#[test]
fn destination_cannot_create_the_vm() {
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    let factory = FakeFactory {
        fail_create: true,
        ..FakeFactory::default()
    };
    let (res, _d) = run_default(&mut vm, "xen", &factory);
    let e = assert_rolled_back(&vm, &res, &factory);
    assert!(
        e.contains("out of resources") && e.contains("cannot allocate"),
        "{e}"
    );
}

#[test]
fn connection_cut_during_rounds() {
    for strategy in ["xen", "downtime"] {
        let mut vm = FakeVm::new(busy_spec(16)).unwrap();
        let factory = FakeFactory::default();
        let fault = Fault {
            dir: Dir::ToDest,
            kind: 0x03, // Pages
            nth: 5,
            action: Action::Cut,
        };
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
    let fault = Fault {
        dir: Dir::ToDest,
        kind: 0x03,
        nth: 3,
        action: Action::Stall,
    };
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
    let (res, d) = run_faulted(&mut vm, &factory, Dir::ToDest, 0x03, 2, Action::Corrupt);
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
fn destination_restore_failure_rolls_back() {
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    let factory = FakeFactory {
        fail_restore: true,
        ..FakeFactory::default()
    };
    let (res, _d) = run_default(&mut vm, "downtime", &factory);
    let e = assert_rolled_back(&vm, &res, &factory);
    assert!(
        e.contains("restore failed") && e.contains("KVM refused"),
        "{e}"
    );
    assert!(vm.calls.contains(&"resume"));
}

#[test]
fn source_vm_failures_roll_back() {
    for fault in 0..3 {
        let mut vm = FakeVm::new(busy_spec(8)).unwrap();
        match fault {
            0 => vm.faults.fail_save_state = true,
            1 => vm.faults.fail_harvest = Some(2),
            _ => vm.faults.fail_pause = true,
        }
        let factory = FakeFactory::default();
        let (res, d) = run(
            &mut vm,
            source_opts("downtime"),
            factory.clone(),
            dest_opts(1 << 30),
            None,
        );
        let e = assert_rolled_back(&vm, &res, &factory);
        assert!(e.contains("injected"), "{e}");
        let de = d.err().unwrap().to_string();
        assert!(de.contains("source VM error"), "{de}");
    }
}

#[test]
fn cancel_mid_migration() {
    let mut vm = FakeVm::new(busy_spec(32)).unwrap();
    let factory = FakeFactory::default();
    let mut opts = source_opts("xen");
    // Slow rounds, so the cancel lands inside one.
    opts.max_bandwidth = Some(Bandwidth::parse("20Mbit").unwrap());
    let cancel = opts.cancel.clone();
    let progress = opts.progress.clone();
    let t = std::thread::spawn(move || {
        while progress.snapshot().bytes_sent < 1 << 20 {
            std::thread::sleep(Duration::from_millis(5));
        }
        cancel.cancel();
    });
    let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
    t.join().unwrap();
    assert_rolled_back(&vm, &res, &factory);
    let f = res.err().unwrap();
    assert_eq!(f.report.outcome, Outcome::Cancelled);
    assert!(matches!(f.error, MigrateError::Cancelled));
    let de = d.err().unwrap().to_string();
    assert!(de.contains("cancelled"), "{de}");
}

#[test]
fn unreachable_and_silent_destinations() {
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    // Nothing listens on the port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let f = migrate(&mut vm, &format!("127.0.0.1:{port}"), source_opts("xen")).unwrap_err();
    assert!(
        f.error.to_string().contains("cannot connect"),
        "{}",
        f.error
    );
    assert_eq!(vm.run_state(), RunState::Running);
    // Not an address at all.
    let f = migrate(&mut vm, "no-such-host.invalid:1", source_opts("xen")).unwrap_err();
    assert!(
        f.error.to_string().contains("cannot resolve"),
        "{}",
        f.error
    );
    // Accepts but never answers.
    let addr = rogue_server(None, Duration::from_secs(3));
    let mut opts = source_opts("xen");
    opts.stall_timeout = Duration::from_millis(500);
    let f = migrate(&mut vm, &addr.to_string(), opts).unwrap_err();
    assert!(f.error.to_string().contains("no progress"), "{}", f.error);
    // Answers garbage.
    let addr = rogue_server(
        Some(b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()),
        Duration::from_secs(1),
    );
    let f = migrate(&mut vm, &addr.to_string(), source_opts("xen")).unwrap_err();
    assert!(f.error.to_string().contains("frame 0"), "{}", f.error);
    assert_eq!(vm.run_state(), RunState::Running);
    assert!(!vm.calls.contains(&"pause"));
}

/// A strategy using the hooks later strategies need: per-page history to
/// hold hot pages back until stop-and-copy, and vCPU throttling.
struct HoldHot {
    rounds: u32,
}

impl Strategy for HoldHot {
    fn name(&self) -> &str {
        "hold-hot"
    }
    fn decide(&mut self, ctx: &StrategyContext<'_>) -> Decision {
        if ctx.round > self.rounds {
            return Decision::StopAndCopy;
        }
        let mut hot = DirtyBitmap::new(ctx.pending.layout());
        for page in ctx.pending.iter() {
            if ctx.history.dirty_count(page, 2) > 0 {
                hot.set(page);
            }
        }
        Decision::Round(RoundPlan {
            hold_back: Some(hot),
            throttle: (ctx.round >= 3).then_some(0.5),
            skip_redirtied: true,
            ..RoundPlan::default()
        })
    }
}

#[test]
fn custom_strategy_holds_hot_pages_back_and_throttles() {
    let mut spec = busy_spec(16);
    spec.vcpus = 2;
    spec.pattern = WritePattern::HotSet {
        hot_fraction: 0.05,
        hot_share: 0.95,
    };
    let mut vm = FakeVm::new(spec).unwrap();
    let factory = FakeFactory::default();
    let mut opts = source_opts("xen");
    opts.strategy = Box::new(HoldHot { rounds: 5 });
    // Rounds long enough for the guest thread to dirty pages even on a
    // loaded machine, so later rounds have history to act on.
    opts.max_bandwidth = Some(Bandwidth::parse("400Mbit").unwrap());
    let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
    let r = check_success(&vm, res, d, &factory);
    assert_eq!(r.strategy, "hold-hot");
    assert_eq!(r.rounds, 6, "{r}");
    // Rounds after the first hold back the pages dirtied recently.
    assert!(r.per_round[2..5].iter().any(|x| x.pages_skipped > 0), "{r}");
    assert!(vm.calls.contains(&"throttle"));
}

#[test]
fn throttle_is_undone_on_rollback() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let mut opts = source_opts("xen");
    opts.strategy = Box::new(HoldHot { rounds: 50 });
    opts.max_bandwidth = Some(Bandwidth::parse("200Mbit").unwrap());
    let fault = Fault {
        dir: Dir::ToDest,
        kind: kind::ROUND_BEGIN,
        nth: 4,
        action: Action::Cut,
    };
    let (res, _d) = run(
        &mut vm,
        opts,
        factory.clone(),
        dest_opts(1 << 30),
        Some(fault),
    );
    assert_rolled_back(&vm, &res, &factory);
    assert!(vm.calls.contains(&"throttle"));
    assert_eq!(vm.throttle_fraction(), 0.0);
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
    let fault = Fault {
        dir: Dir::ToSource,
        kind: kind::READY,
        nth: 1,
        action: Action::Cut,
    };
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

#[test]
fn the_background_cap_spares_the_switchover_but_a_link_does_not() {
    let run_with = |max: Option<&str>, link: Option<&str>| {
        let mut spec = busy_spec(8);
        spec.prefill_pages = 500;
        let mut vm = FakeVm::new(spec).unwrap();
        let factory = FakeFactory::default();
        let mut opts = source_opts("downtime");
        opts.max_bandwidth = max.map(|b| Bandwidth::parse(b).unwrap());
        opts.link_bandwidth = link.map(|b| Bandwidth::parse(b).unwrap());
        let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
        check_success(&vm, res, d, &factory)
    };
    let r = run_with(Some("400Mbit"), None);
    let (live, paused) = r.per_round.split_at(r.per_round.len() - 1);
    assert!(
        live.iter().all(|x| x.rate_limit_bps == Some(400_000_000)),
        "{r}"
    );
    assert!(
        paused[0].stop_and_copy && paused[0].rate_limit_bps.is_none(),
        "{r}"
    );
    let r = run_with(Some("400Mbit"), Some("200Mbit"));
    assert!(
        r.per_round
            .iter()
            .all(|x| x.rate_limit_bps == Some(200_000_000)),
        "{r}"
    );
    assert_eq!(r.link_bandwidth_bps, Some(200_000_000));
}
