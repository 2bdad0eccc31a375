//! The behaviour every store backend must have, run against each by
//! `behaviour_suite!` (tests/embedded.rs, tests/etcd.rs).

pub mod child;
pub mod down;
pub mod kv;
pub mod lease;

use std::time::Duration;

use store::Store;

/// The deadline of the suite's calls: generous on a shared machine.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// The longest any wait in the suite may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A store to test, and how to take it down and bring it back.
pub trait Harness {
    fn store(&self, deadline: Duration) -> Store;
    /// How another process reaches the store.
    fn config(&self) -> store::StoreConfig;
    /// Makes the store unreachable at once (its process or server ends).
    fn kill(&mut self);
    /// Serves again at the same address (etcd: with its data; the embedded
    /// store: empty, as after a restart of the process that holds it).
    fn restart(&mut self);
    /// Whether data survives [`Harness::restart`].
    fn keeps_data(&self) -> bool;
}

/// Runs `f` on a thread and fails the test if it has not returned within
/// [`LIMIT`]: a store call may fail, never hang.
pub fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("{what} did not return within {LIMIT:?}"))
}

/// One `#[test]` per behaviour, each on a fresh store made by `$make`.
#[macro_export]
macro_rules! behaviour_suite {
    ($make:expr) => {
        #[test]
        fn keys_have_revisions() {
            suite::kv::keys_have_revisions(&mut $make);
        }
        #[test]
        fn compare_and_swap_detects_conflicts() {
            suite::kv::compare_and_swap_detects_conflicts(&mut $make);
        }
        #[test]
        fn transactions_are_atomic() {
            suite::kv::transactions_are_atomic(&mut $make);
        }
        #[test]
        fn watches_resume_without_gaps_or_repeats() {
            suite::kv::watches_resume_without_gaps_or_repeats(&mut $make);
        }
        #[test]
        fn leases_expire_with_their_keys() {
            suite::lease::leases_expire_with_their_keys(&mut $make);
        }
        #[test]
        fn a_kept_lease_lives_and_a_revoked_one_ends() {
            suite::lease::a_kept_lease_lives_and_a_revoked_one_ends(&mut $make);
        }
        #[test]
        fn a_standby_takes_over_when_the_leader_lapses() {
            suite::lease::a_standby_takes_over_when_the_leader_lapses(&mut $make);
        }
        #[test]
        fn a_standby_takes_over_when_the_leader_process_is_killed() {
            suite::lease::a_standby_takes_over_when_the_leader_process_is_killed(
                &mut $make,
                "leader_child",
            );
        }
        #[test]
        #[ignore = "a helper process, started by the election test"]
        fn leader_child() {
            suite::child::lead_until_killed();
        }
        #[test]
        fn a_store_that_is_down_gives_errors_not_hangs() {
            suite::down::a_store_that_is_down_gives_errors_not_hangs(&mut $make);
        }
    };
}
