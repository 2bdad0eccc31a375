//! Waiting for something to happen, and test randomness.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::thread;
use std::time::{Duration, Instant};

/// How often [`wait_for`] polls.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `f` every [`POLL`] until it returns `Some`, and returns that; panics
/// naming `what` once `limit` has passed. Every wait in a test has a limit,
/// generous on a shared machine: a test that hangs is a failure, never an
/// endless run.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        thread::sleep(POLL);
    }
}

/// `n` random bytes, not cryptographic (garbage streams, test secrets).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        // Each RandomState has fresh random keys.
        let mut h = RandomState::new().build_hasher();
        h.write_usize(out.len());
        out.extend_from_slice(&h.finish().to_le_bytes());
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_returns_the_first_value() {
        let mut n = 0;
        let v = wait_for("three polls", Duration::from_secs(10), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "timed out after")]
    fn wait_for_gives_up_at_its_limit() {
        wait_for::<()>("nothing", Duration::from_millis(50), || None);
    }

    #[test]
    fn random_bytes_differ() {
        let (a, b) = (random_bytes(37), random_bytes(37));
        assert_eq!(a.len(), 37);
        assert_ne!(a, b);
    }
}
