//! Leases, their keeper, and leader election.

use std::time::{Duration, Instant};

use store::{Election, EventKind, LeaseKeeper, Op, StoreError, Txn};
use testkit::wait_for;

use super::child::{ELECTION, spawn_leader};
use super::{DEADLINE, Harness, LIMIT};

pub fn leases_expire_with_their_keys(h: &mut impl Harness) {
    let s = h.store(DEADLINE);
    let lease = s.grant_lease(Duration::from_secs(1)).unwrap();
    assert!(lease.ttl >= Duration::from_secs(1), "{lease:?}");
    s.put("/l/agent/h1", b"up", Some(lease.id)).unwrap();
    s.put("/l/kept", b"no lease", None).unwrap();
    assert_eq!(s.get("/l/agent/h1").unwrap().unwrap().lease, Some(lease.id));
    let mut w = s.watch("/l/", None).unwrap();
    s.keep_alive(lease.id).unwrap();
    assert!(s.lease_ttl(lease.id).unwrap().is_some());

    // Nobody renews it: the key vanishes by itself, and watchers see it go.
    wait_for("the lease to expire", LIMIT, || {
        s.get("/l/agent/h1").unwrap().is_none().then_some(())
    });
    let e = w.next(LIMIT).unwrap().expect("the expiry's delete event");
    assert_eq!(
        (e.kind, e.kv.key.as_str()),
        (EventKind::Delete, "/l/agent/h1")
    );
    assert!(s.get("/l/kept").unwrap().is_some());
    assert!(matches!(
        s.keep_alive(lease.id),
        Err(StoreError::LeaseNotFound(id)) if id == lease.id
    ));
    assert!(matches!(
        s.put("/l/agent/h1", b"up", Some(lease.id)),
        Err(StoreError::LeaseNotFound(_))
    ));
    assert_eq!(s.lease_ttl(lease.id).unwrap(), None);
}

pub fn a_kept_lease_lives_and_a_revoked_one_ends(h: &mut impl Harness) {
    let s = h.store(DEADLINE);
    let lease = s.grant_lease(Duration::from_secs(1)).unwrap();
    s.put("/k/agent", b"up", Some(lease.id)).unwrap();
    let keeper = LeaseKeeper::start(s.clone(), lease).unwrap();
    // Three TTLs pass; the keeper renews it all along.
    let end = Instant::now() + lease.ttl * 3;
    while Instant::now() < end {
        assert!(s.get("/k/agent").unwrap().is_some(), "a kept lease expired");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(keeper.is_alive());
    keeper.revoke().unwrap();
    assert!(
        s.get("/k/agent").unwrap().is_none(),
        "revoking deletes at once"
    );
    assert!(matches!(
        s.revoke_lease(lease.id),
        Err(StoreError::LeaseNotFound(_))
    ));
    assert!(s.grant_lease(Duration::ZERO).is_err());
}

pub fn a_standby_takes_over_when_the_leader_lapses(h: &mut impl Harness) {
    let s = h.store(DEADLINE);
    let election = Election::new(s.clone(), "/e/leader").unwrap();
    let (la, lb) = (
        s.grant_lease(Duration::from_secs(1)).unwrap(),
        s.grant_lease(Duration::from_secs(1)).unwrap(),
    );
    let keeper_a = LeaseKeeper::start(s.clone(), la).unwrap();
    let _keeper_b = LeaseKeeper::start(s.clone(), lb).unwrap();

    let a = election
        .campaign(la.id, b"manager-a", DEADLINE)
        .unwrap()
        .expect("the first candidate leads");
    let mut observer = election.observe().unwrap();
    assert_eq!(observer.current().unwrap().value, b"manager-a");
    let wait = Duration::from_millis(500);
    assert!(
        election
            .campaign(lb.id, b"manager-b", wait)
            .unwrap()
            .is_none(),
        "two leaders"
    );
    let order = |n: &str| Txn::new().then(Op::put(format!("/e/orders/{n}"), n, None));
    assert!(a.txn(&s, order("1")).unwrap().succeeded);

    // The leader dies: its keep-alives stop, its lease lapses, the standby
    // (still in line) leads.
    drop(keeper_a);
    let b = election
        .campaign(lb.id, b"manager-b", LIMIT)
        .unwrap()
        .expect("the standby takes over");
    assert!(!a.is_current(&s).unwrap());
    assert!(b.is_current(&s).unwrap());
    // The old leader, had it only been paused, can write nothing more.
    assert!(!a.txn(&s, order("2")).unwrap().succeeded);
    assert!(s.get("/e/orders/2").unwrap().is_none());
    assert!(b.txn(&s, order("3")).unwrap().succeeded);
    assert_eq!(election.leader().unwrap().unwrap().value, b"manager-b");
    wait_for("the observer to see the new leader", LIMIT, || {
        observer.changed(Duration::from_millis(200)).unwrap();
        (observer.current()?.value == b"manager-b").then_some(())
    });

    // Resigning hands over at once; with nobody in line, nobody leads.
    b.resign(&s).unwrap();
    assert!(election.leader().unwrap().is_none());
    let lost = election.campaign(la.id, b"manager-a", DEADLINE);
    assert!(
        matches!(lost, Err(StoreError::LeaseNotFound(_))),
        "a dead lease cannot stand: {lost:?}"
    );
}

pub fn a_standby_takes_over_when_the_leader_process_is_killed(
    h: &mut impl Harness,
    child_test: &str,
) {
    let s = h.store(DEADLINE);
    let mut child = spawn_leader(&h.config(), child_test);
    let election = Election::new(s.clone(), ELECTION).unwrap();
    assert_eq!(election.leader().unwrap().unwrap().value, b"child");
    let lease = s.grant_lease(Duration::from_secs(1)).unwrap();
    let _keeper = LeaseKeeper::start(s.clone(), lease).unwrap();
    let standby = election.campaign(lease.id, b"standby", Duration::from_millis(500));
    assert!(standby.unwrap().is_none(), "two leaders");

    child.kill();
    let mine = election
        .campaign(lease.id, b"standby", LIMIT)
        .unwrap()
        .expect("the standby takes over");
    assert!(mine.is_current(&s).unwrap());
    assert_eq!(election.leader().unwrap().unwrap().value, b"standby");
}
