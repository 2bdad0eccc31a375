//! Runs refused or failed by either side without a network fault: wrong
//! secret or version, limits, VM failures on both sides, cancellation, and
//! peers that are not there or not Ferry.

use std::time::Duration;

use migrate::fake::{FakeFactory, FakeVm, RunState};
use migrate::*;
use testkit::{RogueServer, free_port, wait_for};
use units::Bandwidth;
use wire::{AbortCode, Offer};

use crate::harness::*;

#[test]
fn wrong_secret_is_refused_on_both_sides() {
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    let factory = FakeFactory::default();
    let mut opts = source_opts("xen");
    opts.secret = Secret::from_bytes(b"some other secret of 32 bytes!!!").unwrap();
    let (res, d) = run(&mut vm, opts, factory.clone(), waiting_dest(), None);
    let e = assert_rolled_back(&vm, &res, &factory);
    assert!(e.contains("authentication failed"), "{e}");
    assert_refused_one(d);
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
    let (res, d) = run(&mut vm, opts, factory.clone(), waiting_dest(), None);
    let e = assert_rolled_back(&vm, &res, &factory);
    assert!(e.contains("version mismatch") && e.contains("7..=9"), "{e}");
    assert_refused_one(d);
}

/// A destination that gives up waiting soon after a refusal.
fn waiting_dest() -> DestOptions {
    let mut o = dest_opts(1 << 30);
    o.accept_timeout = Some(Duration::from_secs(1));
    o
}

/// The destination refused the one peer and kept waiting, for nothing.
fn assert_refused_one(d: DestResult) {
    match d {
        Err(MigrateError::AcceptTimeout { refused: 1, .. }) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a VM arrived"),
    }
}

/// Garbage, an idle connection and a wrong secret at the destination's
/// port while the source connects: the destination refuses them and the
/// migration completes.
#[test]
fn hostile_peers_at_the_destination_do_not_stop_the_migration() {
    use std::io::Write;
    use std::net::TcpStream;
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    let factory = FakeFactory::default();
    let (addr, dest) = start_dest(factory.clone(), dest_opts(1 << 30));
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.write_all(&testkit::random_bytes(4096)).unwrap();
    let _idle = TcpStream::connect(addr).unwrap();
    let mut wrong = source_opts("xen");
    wrong.secret = Secret::from_bytes(b"some other secret of 32 bytes!!!").unwrap();
    let mut other = FakeVm::new(busy_spec(1)).unwrap();
    let refused = migrate(&mut other, &addr.to_string(), wrong).unwrap_err();
    assert!(refused.error.to_string().contains("authentication failed"));
    let res = migrate(&mut vm, &addr.to_string(), source_opts("xen"));
    check_success(&vm, res, dest.join().unwrap(), &factory);
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
        wait_for("1 MiB sent", Duration::from_secs(60), || {
            (progress.snapshot().bytes_sent >= 1 << 20).then_some(())
        });
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
    let closed = format!("127.0.0.1:{}", free_port());
    let f = migrate(&mut vm, &closed, source_opts("xen")).unwrap_err();
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
    let silent = RogueServer::start(Vec::new(), Duration::from_secs(3));
    let mut opts = source_opts("xen");
    opts.stall_timeout = Duration::from_millis(500);
    let f = migrate(&mut vm, &silent.addr.to_string(), opts).unwrap_err();
    assert!(f.error.to_string().contains("no progress"), "{}", f.error);
    // Answers garbage.
    let garbage = RogueServer::start(
        b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
        Duration::from_secs(1),
    );
    let f = migrate(&mut vm, &garbage.addr.to_string(), source_opts("xen")).unwrap_err();
    assert!(f.error.to_string().contains("frame 0"), "{}", f.error);
    assert_eq!(vm.run_state(), RunState::Running);
    assert!(!vm.calls.contains(&"pause"));
}

/// A host receiving several VMs at once: one gate, each authenticated
/// source served as its own session on its own thread; a garbage peer
/// meanwhile disturbs neither.
#[test]
fn one_gate_serves_concurrent_migrations_as_separate_sessions() {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    let opts = Arc::new(dest_opts(1 << 30));
    let gate = Arc::new(listen(TcpListener::bind("127.0.0.1:0").unwrap(), &opts).unwrap());
    let addr = gate.local_addr().to_string();
    let receivers: Vec<_> = (0..2)
        .map(|_| {
            let (gate, opts) = (Arc::clone(&gate), Arc::clone(&opts));
            std::thread::spawn(move || {
                let source = gate.next(Some(Duration::from_secs(30))).expect("a source");
                let factory = FakeFactory::default();
                let received = receive(source, &mut factory.clone(), &opts);
                (received, factory)
            })
        })
        .collect();
    let mut garbage = TcpStream::connect(&addr).unwrap();
    garbage.write_all(&testkit::random_bytes(4096)).unwrap();
    let sources: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut vm = FakeVm::new(busy_spec(4)).unwrap();
                let res = migrate(&mut vm, &addr, source_opts("xen"));
                (vm, res)
            })
        })
        .collect();
    let sources: Vec<_> = sources.into_iter().map(|t| t.join().unwrap()).collect();
    let received: Vec<_> = receivers.into_iter().map(|t| t.join().unwrap()).collect();
    // Each session received one whole VM: what one source sent.
    let mut sent: Vec<u64> = sources
        .into_iter()
        .map(|(vm, res)| {
            let report = res.unwrap_or_else(|f| panic!("{}", f.error));
            assert_eq!(report.outcome, Outcome::Completed);
            assert_eq!(vm.run_state(), RunState::Retired);
            report.pages_sent
        })
        .collect();
    let mut got: Vec<u64> = received
        .iter()
        .map(|(d, factory)| {
            let d = d
                .as_ref()
                .map_err(|e| e.to_string())
                .expect("the session completed");
            let log = factory.log();
            assert_eq!((log.created, log.resumed, log.discarded), (1, 1, 0));
            d.report.pages
        })
        .collect();
    sent.sort();
    got.sort();
    assert_eq!(sent, got);
    assert_eq!(gate.stats().admitted, 2);
    wait_for("the garbage refused", Duration::from_secs(20), || {
        (gate.stats().refused == 1).then_some(())
    });
}
