//! The embedded store's rules, with time passed in (no waiting).

use std::time::{Duration, Instant};

use super::*;

fn put(core: &mut Core, key: &str, value: &str, lease: Option<LeaseId>) -> Result<TxnOutcome> {
    core.txn(&Txn::new().then(Op::put(key, value, lease)))
}

#[test]
fn revisions_and_versions_follow_etcd() {
    let mut core = Core::new(HISTORY_LIMIT);
    assert_eq!(core.revision(), 1);
    assert_eq!(put(&mut core, "/a", "1", None).unwrap().revision, 2);
    assert_eq!(put(&mut core, "/a", "2", None).unwrap().revision, 3);
    let kv = &core.range("/a", false).kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    // Deleting nothing changes nothing.
    let out = core.txn(&Txn::new().then(Op::delete("/nothing"))).unwrap();
    assert_eq!((out.revision, out.deleted), (3, 0));
    // Deleting then creating again starts a new life.
    core.txn(&Txn::new().then(Op::delete("/a"))).unwrap();
    put(&mut core, "/a", "3", None).unwrap();
    let kv = &core.range("/a", false).kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn one_transaction_is_one_revision() {
    let mut core = Core::new(HISTORY_LIMIT);
    let txn = Txn::new()
        .then(Op::put("/x/1", "a", None))
        .then(Op::put("/x/2", "b", None));
    assert_eq!(core.txn(&txn).unwrap().revision, 2);
    let out = core
        .txn(&Txn::new().then(Op::delete_prefix("/x/")))
        .unwrap();
    assert_eq!((out.revision, out.deleted), (3, 2));
    let events = core.events_since("/x/", 1).unwrap();
    let revs: Vec<_> = events.iter().map(|e| (e.kind, e.revision())).collect();
    use EventKind::*;
    assert_eq!(revs, [(Put, 2), (Put, 2), (Delete, 3), (Delete, 3)]);
}

#[test]
fn compare_on_revisions() {
    let mut core = Core::new(HISTORY_LIMIT);
    let absent = Txn::new()
        .when(Compare::absent("/k"))
        .then(Op::put("/k", "first", None));
    assert!(core.txn(&absent).unwrap().succeeded);
    let again = core.txn(&absent).unwrap();
    assert!(!again.succeeded);
    assert_eq!(again.revision, 2);
    let stale = Txn::new()
        .when(Compare::mod_revision("/k", 1))
        .then(Op::put("/k", "x", None));
    assert!(!core.txn(&stale).unwrap().succeeded);
    let fresh = Txn::new()
        .when(Compare::mod_revision("/k", 2))
        .when(Compare::create_revision("/k", 2))
        .then(Op::put("/k", "y", None));
    assert!(core.txn(&fresh).unwrap().succeeded);
    assert_eq!(core.range("/k", false).kvs[0].value, b"y");
}

#[test]
fn a_key_written_twice_in_one_transaction_is_refused() {
    let mut core = Core::new(HISTORY_LIMIT);
    let twice = Txn::new()
        .then(Op::put("/k", "a", None))
        .then(Op::delete("/k"));
    assert!(matches!(core.txn(&twice), Err(StoreError::Rejected { .. })));
    let under = Txn::new()
        .then(Op::delete_prefix("/p/"))
        .then(Op::put("/p/k", "a", None));
    assert!(matches!(core.txn(&under), Err(StoreError::Rejected { .. })));
    assert_eq!(core.revision(), 1);
}

#[test]
fn leases_expire_with_their_keys() {
    let t0 = Instant::now();
    let mut core = Core::new(HISTORY_LIMIT);
    let lease = core.grant(2, t0).unwrap();
    assert_eq!(lease.ttl, Duration::from_secs(2));
    put(&mut core, "/agents/h1", "up", Some(lease.id)).unwrap();
    put(&mut core, "/agents/h2", "up", Some(lease.id)).unwrap();
    // Re-put without a lease detaches the key: it outlives the lease.
    put(&mut core, "/agents/h2", "kept", None).unwrap();
    assert!(!core.expire(t0 + Duration::from_secs(1)));
    core.keep_alive(lease.id, t0 + Duration::from_secs(1))
        .unwrap();
    assert!(!core.expire(t0 + Duration::from_millis(2500)));
    assert_eq!(
        core.time_to_live(lease.id, t0 + Duration::from_millis(2500)),
        Some(Duration::from_millis(500))
    );
    let rev = core.revision();
    assert!(core.expire(t0 + Duration::from_secs(3)));
    assert_eq!(core.revision(), rev + 1);
    let left: Vec<_> = core
        .range("/agents/", true)
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(left, ["/agents/h2"]);
    assert!(matches!(
        core.keep_alive(lease.id, t0 + Duration::from_secs(3)),
        Err(StoreError::LeaseNotFound(_))
    ));
    assert!(matches!(
        put(&mut core, "/x", "y", Some(lease.id)),
        Err(StoreError::LeaseNotFound(_))
    ));
    assert_eq!(core.time_to_live(lease.id, t0), None);
}

#[test]
fn revoke_deletes_at_one_revision() {
    let t0 = Instant::now();
    let mut core = Core::new(HISTORY_LIMIT);
    let lease = core.grant(10, t0).unwrap();
    put(&mut core, "/a", "1", Some(lease.id)).unwrap();
    put(&mut core, "/b", "1", Some(lease.id)).unwrap();
    core.revoke(lease.id).unwrap();
    assert_eq!(core.revision(), 4);
    assert!(core.range("", true).kvs.is_empty());
    assert!(core.revoke(lease.id).is_err());
    assert!(core.grant(0, t0).is_err());
}

#[test]
fn history_is_bounded_by_whole_revisions() {
    let mut core = Core::new(3);
    for i in 0..4 {
        put(&mut core, &format!("/k{i}"), "v", None).unwrap();
    }
    // Revisions 2..=5 happened; 3 events are kept: 3, 4, 5.
    assert_eq!(core.events_since("/", 3).unwrap().len(), 3);
    match core.events_since("/", 2) {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (2, 3)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    let both = Txn::new()
        .then(Op::put("/a", "v", None))
        .then(Op::put("/b", "v", None));
    core.txn(&both).unwrap();
    // Two events at revision 6 push out 3 and 4.
    assert!(core.events_since("/", 4).is_err());
    assert_eq!(core.events_since("/", 5).unwrap().len(), 3);
    assert_eq!(core.events_since("/k", 6).unwrap().len(), 0);
}
