//! Keys, revisions, compare-and-swap, transactions and watches.

use std::time::Duration;

use store::{Compare, EventKind, Op, StoreError, Swap, Txn};

use super::{DEADLINE, Harness};

pub fn keys_have_revisions(h: &mut impl Harness) {
    let s = h.store(DEADLINE);
    let r1 = s.put("/t/a", b"1", None).unwrap();
    let r2 = s.put("/t/a", b"2", None).unwrap();
    assert_eq!(r2, r1 + 1, "each change is one revision");
    let kv = s.get("/t/a").unwrap().unwrap();
    assert_eq!(kv.value, b"2");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version, kv.lease),
        (r1, r2, 2, None)
    );
    let r3 = s.put("/t/b", b"3", None).unwrap();
    s.put("/u/c", b"4", None).unwrap();
    let listing = s.list("/t/").unwrap();
    let keys: Vec<_> = listing.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/t/a", "/t/b"]);
    assert_eq!(
        listing.revision,
        r3 + 1,
        "a read reports the store's revision"
    );
    assert_eq!(s.list("").unwrap().kvs.len(), 3);
    assert!(s.get("/t/none").unwrap().is_none());

    assert!(s.delete("/t/a").unwrap());
    assert!(!s.delete("/t/a").unwrap());
    assert_eq!(s.delete_prefix("/t/").unwrap(), 1);
    assert!(s.list("/t/").unwrap().kvs.is_empty());
    assert!(matches!(s.get(""), Err(StoreError::InvalidKey(_))));
    assert!(matches!(
        s.put("", b"x", None),
        Err(StoreError::InvalidKey(_))
    ));
}

pub fn compare_and_swap_detects_conflicts(h: &mut impl Harness) {
    let s = h.store(DEADLINE);
    let Swap::Done(created) = s.compare_and_swap("/o/vm1", 0, b"on h1", None).unwrap() else {
        panic!("creating an absent key must succeed");
    };
    assert_eq!(
        s.compare_and_swap("/o/vm1", 0, b"again", None).unwrap(),
        Swap::Conflict,
        "the key exists now"
    );
    // Two writers read the same revision; only the first write lands.
    let read = s.get("/o/vm1").unwrap().unwrap().mod_revision;
    assert_eq!(read, created);
    let first = s.compare_and_swap("/o/vm1", read, b"to h2", None).unwrap();
    assert!(matches!(first, Swap::Done(r) if r > read));
    let second = s.compare_and_swap("/o/vm1", read, b"to h3", None).unwrap();
    assert_eq!(second, Swap::Conflict);
    assert_eq!(s.get("/o/vm1").unwrap().unwrap().value, b"to h2");
}

pub fn transactions_are_atomic(h: &mut impl Harness) {
    let s = h.store(DEADLINE);
    let order = Txn::new()
        .when(Compare::absent("/x/order/1"))
        .then(Op::put("/x/order/1", b"vm1 h1->h2".to_vec(), None))
        .then(Op::put("/x/vm/vm1", b"migrating".to_vec(), None));
    let out = s.txn(order.clone()).unwrap();
    assert!(out.succeeded);
    let listing = s.list("/x/").unwrap();
    assert_eq!(listing.kvs.len(), 2);
    assert!(
        listing.kvs.iter().all(|kv| kv.mod_revision == out.revision),
        "both writes at one revision"
    );
    // The same order again fails as a whole and changes nothing.
    let again = s.txn(order).unwrap();
    assert!(!again.succeeded);
    assert_eq!(again.revision, out.revision);
    let cleanup = Txn::new()
        .when(Compare::mod_revision("/x/vm/vm1", out.revision))
        .then(Op::delete_prefix("/x/"));
    let gone = s.txn(cleanup).unwrap();
    assert_eq!((gone.succeeded, gone.deleted), (true, 2));
    assert_eq!(gone.revision, out.revision + 1);
}

pub fn watches_resume_without_gaps_or_repeats(h: &mut impl Harness) {
    let s = h.store(DEADLINE);
    let short = Duration::from_millis(300);
    let r0 = s.put("/w/a", b"1", None).unwrap();
    s.put("/w/b", b"2", None).unwrap();
    s.put("/x/elsewhere", b"-", None).unwrap();
    let rd = s.txn(Txn::new().then(Op::delete("/w/a"))).unwrap().revision;

    // From a past revision: the history, in order, under the prefix only.
    let mut w = s.watch("/w/", Some(r0)).unwrap();
    let mut seen = Vec::new();
    while let Some(e) = w.next(short).unwrap() {
        seen.push((e.kind, e.kv.key.clone(), e.revision()));
    }
    use EventKind::*;
    assert_eq!(
        seen,
        [
            (Put, "/w/a".into(), r0),
            (Put, "/w/b".into(), r0 + 1),
            (Delete, "/w/a".into(), rd),
        ]
    );
    assert_eq!(w.resume_from(), rd + 1);

    // A new watch from where the old one stopped sees exactly what came after.
    let resume = w.resume_from();
    drop(w);
    let rc = s.put("/w/c", b"3", None).unwrap();
    let mut w2 = s.watch("/w/", Some(resume)).unwrap();
    let e = w2.next(DEADLINE).unwrap().expect("the put after the break");
    assert_eq!((e.kind, e.kv.key.as_str(), e.revision()), (Put, "/w/c", rc));
    assert_eq!(e.kv.value, b"3");
    assert!(w2.next(short).unwrap().is_none(), "nothing twice");

    // From now on: only what happens after the watch starts.
    let mut w3 = s.watch("/w/", None).unwrap();
    assert!(w3.next(short).unwrap().is_none());
    let rd2 = s.put("/w/d", b"4", None).unwrap();
    let e = w3.next(DEADLINE).unwrap().expect("the new put");
    assert_eq!((e.kv.key.as_str(), e.revision()), ("/w/d", rd2));
    let e = w2
        .next(DEADLINE)
        .unwrap()
        .expect("the older watch sees it too");
    assert_eq!(e.revision(), rd2);
    assert!(matches!(
        s.watch("/w/", Some(0)),
        Err(StoreError::InvalidConfig(_))
    ));
}
