//! Shared by the engine tests: a fake destination on a thread, options,
//! one run through the fault proxy, and the checks of both outcomes.

use std::net::{SocketAddr, TcpListener};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use migrate::fake::{FakeDestVm, FakeFactory, FakeSpec, FakeVm, RunState, first_difference};
use migrate::faults::{Action, Dir, Fault, Proxy, Spot};
use migrate::*;

pub const MIB: u64 = 1 << 20;

pub const SECRET: &[u8] = b"test secret: 32 bytes of entropy";

pub fn secret() -> Secret {
    Secret::from_bytes(SECRET).unwrap()
}

pub type DestResult = Result<Received<FakeDestVm>, MigrateError>;

/// Starts a destination that accepts one connection.
pub fn start_dest(factory: FakeFactory, opts: DestOptions) -> (SocketAddr, JoinHandle<DestResult>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let h = thread::spawn(move || {
        let mut f = factory;
        migrate::accept_one(listener, &mut f, &opts)
    });
    (addr, h)
}

pub fn dest_opts(max_memory: u64) -> DestOptions {
    let mut o = DestOptions::new(secret(), max_memory);
    o.stall_timeout = Duration::from_secs(2);
    o
}

pub fn busy_spec(mib: u64) -> FakeSpec {
    let mut s = FakeSpec::new(mib);
    s.writes_per_sec = 3000;
    s.working_set_pages = 1024;
    s
}

pub fn source_opts(strategy: &str) -> SourceOptions {
    let mut o = SourceOptions::new(secret(), strategy.parse::<StrategyKind>().unwrap().build());
    o.stall_timeout = Duration::from_secs(2);
    o.connect_timeout = Duration::from_secs(2);
    o
}

/// `hybrid` that always switches to post-copy (never copies the rest in
/// the pause): for tests of the post-copy path itself.
pub fn switching_hybrid_opts() -> SourceOptions {
    let p = StrategyParams::parse(["copy-under=0s"]).unwrap();
    let mut o = source_opts("hybrid");
    o.strategy = StrategyKind::Hybrid.build_with(&p).unwrap();
    o
}

/// Migrates `vm` to a fresh fake destination; returns both sides' results.
pub fn run(
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
pub fn run_default(
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
pub fn run_faulted(
    vm: &mut FakeVm,
    factory: &FakeFactory,
    dir: Dir,
    kind: u8,
    nth: u32,
    action: Action,
) -> (Result<MigrationReport, Box<MigrationFailure>>, DestResult) {
    // A cut or stall lands before the frame (the peer gets none of it); a
    // corrupted byte inside it.
    let spot = match action {
        Action::Corrupt => Spot::Inside,
        Action::Cut | Action::Stall => Spot::Before,
    };
    let fault = Fault::new(dir, kind, action).nth(nth).at(spot);
    run(
        vm,
        source_opts("downtime"),
        factory.clone(),
        dest_opts(1 << 30),
        Some(fault),
    )
}

/// The source kept the VM: it runs, nothing ran on the destination.
pub fn assert_rolled_back(
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

pub fn check_success(
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
    let downtime = report
        .downtime_ms
        .expect("a completed migration has a downtime");
    assert_eq!(
        report.downtime_target_missed,
        downtime > report.max_downtime_ms,
        "{report}"
    );
    assert!(report.bytes_sent > 0);
    let switch_round = u32::from(report.postcopy.is_some());
    assert_eq!(received.report.rounds + switch_round, report.rounds);
    // Pages in flight when a link broke are sent again on the next one.
    if report.postcopy.as_ref().is_none_or(|p| p.reconnects == 0) {
        assert_eq!(received.report.pages, data_pages(&report), "{report}");
    }
    if let Some(p) = &report.postcopy {
        assert_eq!(received.report.postcopy_pages, p.pages_to_fetch);
        assert!(vm.calls.contains(&"release"), "{:?}", vm.calls);
        let overwrites = received
            .vm
            .postcopy()
            .map(|m| m.overwrites.load(std::sync::atomic::Ordering::Relaxed));
        // A switch with nothing to fetch intercepts nothing.
        let none_over = (p.pages_to_fetch > 0).then_some(0);
        assert_eq!(overwrites, none_over, "a page arrived over a present one");
    } else {
        assert!(!vm.calls.contains(&"release"), "{:?}", vm.calls);
    }
    report
}

/// Pages sent as data, in pre-copy rounds and in post-copy.
pub fn data_pages(r: &MigrationReport) -> u64 {
    r.pages_sent
        + r.postcopy
            .as_ref()
            .map_or(0, |p| p.pages_requested + p.pages_pushed - p.zero_pages)
}
