//! A store that goes down and comes back.

use std::time::Duration;

use store::{LeaseId, Op, StoreError, Txn};
use testkit::wait_for;

use super::{Harness, LIMIT, bounded};

/// One store call, run on a thread of its own; its error if it failed.
type Call = Box<dyn FnOnce(store::Store) -> Option<StoreError> + Send>;

pub fn a_store_that_is_down_gives_errors_not_hangs(h: &mut impl Harness) {
    let s = h.store(Duration::from_secs(2));
    s.put("/d/k", b"v", None).unwrap();
    let lease = s.grant_lease(Duration::from_secs(30)).unwrap();
    let mut w = s.watch("/d/", None).unwrap();
    h.kill();

    // Every call fails (unreachable or timed out), none hangs.
    let calls: Vec<(&str, Call)> = vec![
        ("get", Box::new(|s| s.get("/d/k").err())),
        ("list", Box::new(|s| s.list("/d/").err())),
        ("put", Box::new(|s| s.put("/d/k", b"w", None).err())),
        (
            "txn",
            Box::new(|s| s.txn(Txn::new().then(Op::delete("/d/k"))).err()),
        ),
        (
            "grant",
            Box::new(|s| s.grant_lease(Duration::from_secs(5)).err()),
        ),
        (
            "keep-alive",
            Box::new(move |s| s.keep_alive(lease.id).err()),
        ),
        ("revoke", Box::new(|s| s.revoke_lease(LeaseId(1)).err())),
        ("watch", Box::new(|s| s.watch("/d/", None).err())),
    ];
    for (name, call) in calls {
        let store = s.clone();
        let err = bounded(name, move || call(store));
        let err = err.unwrap_or_else(|| panic!("{name} succeeded with the store down"));
        assert!(err.is_unavailable(), "{name}: {err}");
    }
    let err = bounded("an open watch", move || {
        // It may first report quiet periods; it must fail, not hang.
        loop {
            match w.next(Duration::from_millis(500)) {
                Ok(None) => continue,
                Ok(Some(e)) => panic!("an event from a dead store: {e:?}"),
                Err(e) => return (e, w),
            }
        }
    });
    let (err, w) = err;
    assert!(err.is_unavailable(), "{err}");

    // Back up: the same handle works again (after a failure or two while
    // it reconnects).
    h.restart();
    let kv = wait_for("the store to answer again", LIMIT, || s.get("/d/k").ok());
    if h.keeps_data() {
        assert_eq!(kv.expect("etcd keeps its data").value, b"v");
        // A watch resumed from where the broken one stopped misses nothing.
        let r = s.put("/d/after", b"x", None).unwrap();
        let mut again = s.watch("/d/", Some(w.resume_from())).unwrap();
        let e = again
            .next(LIMIT)
            .unwrap()
            .expect("the put after the restart");
        assert_eq!((e.kv.key.as_str(), e.revision()), ("/d/after", r));
    } else {
        assert!(kv.is_none(), "a new embedded store starts empty");
        s.put("/d/k", b"v2", None).unwrap();
    }
}
