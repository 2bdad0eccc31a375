//! A source process that dies in post-copy, played by a first `migrate`
//! that gives up at a cut link (no recovery) while its journal recorded
//! the switch, and a restarted source: `resume_postcopy` on the same
//! memory (as the shared file would hold it) reattaches and completes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use migrate::fake::{FakeFactory, FakeVm, RunState, first_difference};
use migrate::faults::{Action, Dir, Fault, Proxy, Spot};
use migrate::*;
use units::Bandwidth;
use vmstate::VmState;
use vmstate::record::kind::PAGES;

use crate::harness::*;

/// What the journal recorded: the switch, and the transactions' numbers.
#[derive(Default)]
struct Recorded {
    switch: Option<(u64, Vec<u64>, bool)>,
    applied: Vec<u64>,
    given_up: bool,
    ended: bool,
}

struct MemJournal(Arc<Mutex<Recorded>>);

impl Journal for MemJournal {
    fn switched(&mut self, rec: &Switched<'_>) -> Result<(), VmError> {
        self.0.lock().unwrap().switch =
            Some((rec.migration_id, rec.set.to_vec(), rec.transactions));
        Ok(())
    }

    fn applying(&mut self, _seq: u64) {}

    fn given_up(&mut self) {
        self.0.lock().unwrap().given_up = true;
    }

    fn applied(&mut self, seq: u64, _state: &VmState) {
        self.0.lock().unwrap().applied.push(seq);
    }

    fn ended(&mut self) {
        self.0.lock().unwrap().ended = true;
    }
}

#[test]
fn a_restarted_source_takes_the_post_copy_up_and_completes() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let mut dopts = dest_opts(1 << 30);
    dopts.recovery_timeout = Duration::from_secs(20);
    let (daddr, dest) = start_dest(factory.clone(), dopts);
    let fault = Fault::new(Dir::ToDest, PAGES, Action::Cut)
        .nth(20)
        .at(Spot::Before);
    let proxy = Proxy::start(daddr, Some(fault)).unwrap();
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let link = Some(Bandwidth::parse("100Mbit").unwrap());
    // The first source: no transactions (it could not resume the VM
    // itself), and it gives up at the cut as a killed process would.
    let mut opts = source_opts("postcopy");
    opts.link_bandwidth = link;
    opts.recovery_timeout = Duration::ZERO;
    opts.sync_interval = Duration::ZERO;
    opts.lease = Duration::from_millis(200);
    opts.journal = Some(Box::new(MemJournal(recorded.clone())));
    let fail = migrate(&mut vm, &proxy.addr.to_string(), opts).expect_err("the link was cut");
    assert_eq!(
        fail.report.vm_location,
        VmLocation::Nowhere,
        "{}",
        fail.report
    );
    assert_eq!(vm.run_state(), RunState::Retired);
    let (id, set, transactions) = recorded.lock().unwrap().switch.clone().expect("recorded");
    assert!(!transactions);
    assert!(!recorded.lock().unwrap().ended);
    // The restarted source, from the record alone.
    let rec = PostcopyResume {
        migration_id: id,
        set,
        transactions,
        synced: 0,
        state: None,
    };
    let mut opts = source_opts("postcopy");
    opts.link_bandwidth = link;
    opts.lease = Duration::from_millis(200);
    opts.journal = Some(Box::new(MemJournal(recorded.clone())));
    let report = match resume_postcopy(&mut vm, &daddr.to_string(), rec, opts) {
        Ok(r) => r,
        Err(f) => panic!("the restarted source failed: {}\n{}", f.error, f.report),
    };
    let received = dest.join().unwrap().expect("the destination completes");
    drop(proxy);
    assert_eq!(report.outcome, Outcome::Completed, "{report}");
    assert_eq!(report.vm_location, VmLocation::Destination);
    let p = report.postcopy.as_ref().expect("a post-copy report");
    assert_eq!((p.trigger.as_str(), p.reconnects), ("restarted source", 1));
    assert_eq!(received.report.reconnects, 1);
    assert!(recorded.lock().unwrap().ended);
    assert!(vm.calls.contains(&"release"), "{:?}", vm.calls);
    let log = factory.log();
    assert_eq!((log.resumed, log.discarded), (1, 0), "{log:?}");
    let regions = vm.config().regions;
    assert_eq!(
        first_difference(vm.memory(), received.vm.memory(), &regions),
        None,
        "destination memory differs from the source's"
    );
}

/// No destination to come back to and no recorded state: the restarted
/// source gives up at the recovery timeout; the VM stays retired here.
#[test]
fn a_restarted_source_without_its_destination_gives_up_at_the_recovery_timeout() {
    let mut vm = FakeVm::new(busy_spec(4)).unwrap();
    let layout = vm.layout().clone();
    vm.retire();
    let rec = PostcopyResume {
        migration_id: 7,
        set: DirtyBitmap::new(&layout).words().to_vec(),
        transactions: false,
        synced: 0,
        state: None,
    };
    let mut opts = source_opts("postcopy");
    opts.recovery_timeout = Duration::from_millis(300);
    opts.lease = Duration::from_millis(100);
    // Nobody listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let fail = resume_postcopy(&mut vm, &addr.to_string(), rec, opts).expect_err("no destination");
    assert_eq!(
        fail.report.vm_location,
        VmLocation::Nowhere,
        "{}",
        fail.report
    );
    assert!(
        matches!(fail.report.outcome, Outcome::Interrupted(_)),
        "{}",
        fail.report
    );
    assert!(
        fail.error.to_string().contains("not restored within"),
        "{}",
        fail.error
    );
    assert_eq!(vm.run_state(), RunState::Retired);
}

/// The first source gave the VM up but never heard Owned (and, like a
/// killed process, did not come back): it stays in doubt, its journal says
/// never to resume the VM; the restarted source learns from the
/// destination that the VM is there for good, and frees its memory.
#[test]
fn a_restarted_source_hears_the_destination_owns_the_vm() {
    let mut vm = FakeVm::new(busy_spec(8)).unwrap();
    let factory = FakeFactory::default();
    let (daddr, dest) = start_dest(factory.clone(), dest_opts(1 << 30));
    let fault = Fault::new(Dir::ToSource, wire::kind::OWNED, Action::Cut).at(Spot::Before);
    let proxy = Proxy::start(daddr, Some(fault)).unwrap();
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let mut opts = source_opts("postcopy");
    opts.recovery_timeout = Duration::ZERO;
    opts.lease = Duration::from_millis(200);
    opts.journal = Some(Box::new(MemJournal(recorded.clone())));
    let fail = migrate(&mut vm, &proxy.addr.to_string(), opts).expect_err("Owned was cut");
    assert!(
        matches!(fail.report.outcome, Outcome::InDoubt(_)),
        "{}",
        fail.report
    );
    let received = dest.join().unwrap().expect("the destination owns the VM");
    assert!(received.report.owned);
    let (id, set, transactions) = recorded.lock().unwrap().switch.clone().expect("recorded");
    assert!(recorded.lock().unwrap().given_up);
    assert!(!recorded.lock().unwrap().ended);
    assert!(!vm.calls.contains(&"release"), "{:?}", vm.calls);
    let rec = PostcopyResume {
        migration_id: id,
        set,
        transactions,
        synced: 0,
        state: None,
    };
    let mut opts = source_opts("postcopy");
    opts.lease = Duration::from_millis(200);
    opts.journal = Some(Box::new(MemJournal(recorded.clone())));
    let report = match resume_postcopy(&mut vm, &daddr.to_string(), rec, opts) {
        Ok(r) => r,
        Err(f) => panic!("the restarted source failed: {}\n{}", f.error, f.report),
    };
    drop(proxy);
    assert_eq!(report.outcome, Outcome::Completed, "{report}");
    assert_eq!(report.vm_location, VmLocation::Destination);
    assert!(recorded.lock().unwrap().ended);
    assert!(vm.calls.contains(&"release"), "{:?}", vm.calls);
    assert_eq!(factory.log().discarded, 0);
}
