//! The observer in `SourceOptions` hears every phase in order, every
//! round, and the end, on success and on rollback; the migration id it is
//! told is the one the destination received.

use std::sync::{Arc, Mutex};

use migrate::fake::{FakeFactory, FakeVm};
use migrate::faults::{Action, Dir, Fault, Spot};
use migrate::*;
use vmstate::record::kind::PAGES;

use crate::harness::*;

/// What an observer heard, in order, as short strings.
fn listen(opts: &mut SourceOptions) -> Arc<Mutex<Vec<String>>> {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = heard.clone();
    opts.observer = Some(Arc::new(move |e: &MigrationEvent<'_>| {
        let line = match e {
            MigrationEvent::Phase(p) => format!("phase {p:?}"),
            MigrationEvent::Round(r) => format!("round {}", r.round),
            MigrationEvent::Finished(r) => format!("finished {}", r.outcome),
        };
        h.lock().unwrap().push(line);
    }));
    heard
}

fn phases(heard: &[String]) -> Vec<&str> {
    heard
        .iter()
        .filter_map(|l| l.strip_prefix("phase "))
        .collect()
}

#[test]
fn a_completed_migration_is_heard_phase_by_phase() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let mut opts = source_opts("xen");
    opts.migration_id = 0x5eed;
    let heard = listen(&mut opts);
    let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
    assert_eq!(d.as_ref().unwrap().report.migration_id, 0x5eed);
    let report = check_success(&vm, res, d, &factory);
    let heard = heard.lock().unwrap();
    assert_eq!(
        phases(&heard),
        [
            "Setup",
            "Iterative",
            "StopAndCopy",
            "StateTransfer",
            "Commit",
            "Done"
        ]
    );
    let rounds = heard.iter().filter(|l| l.starts_with("round ")).count();
    assert_eq!(rounds as u32, report.rounds);
    assert_eq!(heard.last().unwrap(), "finished completed");
}

#[test]
fn a_failed_migration_is_heard_rolling_back() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let mut opts = source_opts("xen");
    let heard = listen(&mut opts);
    let fault = Fault::new(Dir::ToDest, PAGES, Action::Cut)
        .nth(3)
        .at(Spot::Before);
    let (res, _) = run(
        &mut vm,
        opts,
        factory.clone(),
        dest_opts(1 << 30),
        Some(fault),
    );
    assert_rolled_back(&vm, &res, &factory);
    let heard = heard.lock().unwrap();
    assert_eq!(phases(&heard).last(), Some(&"RolledBack"), "{heard:?}");
    assert!(!phases(&heard).contains(&"Commit"), "{heard:?}");
    assert!(
        heard.last().unwrap().starts_with("finished failed"),
        "{heard:?}"
    );
}

#[test]
fn a_refused_connection_is_heard_too() {
    let mut vm = FakeVm::new(busy_spec(4)).unwrap();
    let mut opts = source_opts("xen");
    let heard = listen(&mut opts);
    let port = testkit::free_port();
    let res = migrate(&mut vm, &format!("127.0.0.1:{port}"), opts);
    assert!(res.is_err());
    let heard = heard.lock().unwrap();
    assert_eq!(phases(&heard), ["Setup", "RolledBack"]);
    assert!(heard.last().unwrap().starts_with("finished failed"));
}
