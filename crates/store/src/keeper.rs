//! [`LeaseKeeper`]: keeps a lease alive from a thread of its own, so an
//! agent's or manager's loop never has to time its keep-alives.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::{Result, StoreError};
use crate::store::Store;
use crate::types::Lease;

/// Renews a lease every third of its TTL. Once the lease is lost (the
/// store says it expired, or no renewal succeeded for a whole TTL), it
/// stays lost: the owner must grant a new lease and publish again.
pub struct LeaseKeeper {
    lease: Lease,
    store: Store,
    state: Arc<Mutex<State>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Clone, Copy)]
enum State {
    /// Surely alive until this instant: the sending time of the last
    /// renewal that succeeded, plus the TTL (the store renewed it later
    /// than we sent, so it lives at least that long).
    Alive {
        until: Instant,
    },
    Lost,
}

impl LeaseKeeper {
    /// Starts renewing `lease`, which was just granted (or renewed).
    pub fn start(store: Store, lease: Lease) -> Result<LeaseKeeper> {
        let state = Arc::new(Mutex::new(State::Alive {
            until: Instant::now() + lease.ttl,
        }));
        let (stop, stopped) = mpsc::channel();
        let thread = {
            let (store, state) = (store.clone(), Arc::clone(&state));
            thread::Builder::new()
                .name("store-lease".into())
                .spawn(move || renew(&store, lease, &state, &stopped))
                .map_err(|e| StoreError::InvalidConfig(format!("cannot start a thread: {e}")))?
        };
        Ok(LeaseKeeper {
            lease,
            store,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn lease(&self) -> Lease {
        self.lease
    }

    /// The instant until which the lease surely lives, or None once lost.
    /// A leader stops acting before it.
    pub fn valid_until(&self) -> Option<Instant> {
        match *self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            State::Alive { until } if until > Instant::now() => Some(until),
            _ => None,
        }
    }

    pub fn is_alive(&self) -> bool {
        self.valid_until().is_some()
    }

    /// Stops renewing and revokes the lease: its keys vanish now.
    pub fn revoke(mut self) -> Result<()> {
        self.halt();
        self.store.revoke_lease(self.lease.id)
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Dropping a keeper stops renewing; the lease then lapses after its TTL.
impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.halt();
    }
}

fn renew(store: &Store, lease: Lease, state: &Mutex<State>, stopped: &mpsc::Receiver<()>) {
    let period = (lease.ttl / 3).max(Duration::from_millis(100));
    loop {
        match stopped.recv_timeout(period) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let sent = Instant::now();
        let result = store.keep_alive(lease.id);
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        match (result, *s) {
            (_, State::Lost) => return,
            (Ok(()), State::Alive { .. }) => {
                *s = State::Alive {
                    until: sent + lease.ttl,
                }
            }
            (Err(StoreError::LeaseNotFound(_)), _) => {
                *s = State::Lost;
                return;
            }
            (Err(_), State::Alive { until }) if until <= Instant::now() => {
                *s = State::Lost;
                return;
            }
            // The store is unreachable for now: try again next period.
            (Err(_), State::Alive { .. }) => {}
        }
    }
}
