//! The destination's post-copy lease: the VM runs here only while the
//! source's latest grant holds (docs/SAFETY.md, "Leases"). A grant answers
//! one [`LeaseRequest`] and lasts one lease period from when that request
//! left, by this host's monotonic clock; a grant late in the network thus
//! never stretches it. A watchdog that never touches the network fences
//! the vCPUs the moment the lease lapses; the next grant lifts the fence.
//!
//! ```text
//!            Ready sent: lease = ready + period
//!   Holding ------------------------------------+
//!     ^  | LeaseGrant(seq): lease = asked(seq)   | now >= lease:
//!     +--+ + period                              | fence the vCPUs
//!     ^                                          v
//!     +-------- LeaseGrant, lease > now ----  Fenced
//!   Holding/Fenced --- LeaseGrant FINAL ---> Owned (no lease; lifted)
//! ```

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use wire::{LeaseGrant, LeaseRequest};

use super::session::{SharedWriter, lock};
use crate::error::{MigrateError, VmOp};
use crate::vm::Fence;

/// The lease of a destination in post-copy.
pub(super) struct Lease {
    period: Duration,
    fence: Arc<dyn Fence>,
    /// The VM runs when not fenced (false: it was paused on the source).
    run: bool,
    state: Mutex<State>,
}

struct State {
    /// The VM may run until then.
    until: Instant,
    /// The source gave the VM up for good ([`LeaseGrant::FINAL`]).
    owned: bool,
    fenced: bool,
    /// Times the lease lapsed.
    lapses: u64,
    /// Requests sent and not answered yet, oldest first: (seq, sent at).
    asked: VecDeque<(u64, Instant)>,
    next_seq: u64,
    next_ask: Instant,
}

impl Lease {
    /// A lease of `period` from `anchor` (when Ready left: the Commit that
    /// answers it is the first grant).
    pub(super) fn new(period: Duration, fence: Arc<dyn Fence>, run: bool, anchor: Instant) -> Self {
        Lease {
            period,
            fence,
            run,
            state: Mutex::new(State {
                until: anchor + period,
                owned: false,
                fenced: false,
                lapses: 0,
                asked: VecDeque::new(),
                next_seq: 1,
                next_ask: Instant::now(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// At Commit: whether the VM may start. If the lease already lapsed it
    /// starts fenced, and the next grant starts it.
    pub(super) fn may_start(&self) -> Result<bool, MigrateError> {
        let mut s = self.state();
        if Instant::now() < s.until {
            return Ok(true);
        }
        self.lapse(&mut s)?;
        Ok(false)
    }

    /// Keeps the lease from fencing or lifting the vCPUs while the guard
    /// lives: a transaction's capture stops and restarts them itself.
    pub(super) fn hold(&self) -> impl Drop + '_ {
        self.state()
    }

    /// Times the lease lapsed (the vCPUs were fenced).
    pub(super) fn lapses(&self) -> u64 {
        self.state().lapses
    }

    /// A new link replaced a broken one: requests sent on the old one will
    /// never be answered. Called with the writer locked, so that no request
    /// recorded before goes out on the new link.
    pub(super) fn relinked(&self) {
        let mut s = self.state();
        s.asked.clear();
        s.next_ask = Instant::now();
    }

    /// Whether the source gave the VM up for good.
    pub(super) fn owned(&self) -> bool {
        self.state().owned
    }

    /// A grant read from the source: it must answer the oldest request not
    /// answered yet (or be FINAL). Lifts the fence if the lease holds again.
    pub(super) fn granted(&self, g: &LeaseGrant) -> Result<(), MigrateError> {
        let mut s = self.state();
        if g.is_final() {
            s.owned = true;
            s.asked.clear();
            return self.lift(&mut s);
        }
        match s.asked.front() {
            Some(&(seq, sent)) if seq == g.seq => {
                s.asked.pop_front();
                s.until = s.until.max(sent + self.period);
            }
            front => {
                return Err(MigrateError::Protocol(match front {
                    Some((seq, _)) => format!(
                        "LeaseGrant answers request {}, but the oldest request not answered is {seq}",
                        g.seq
                    ),
                    None => format!(
                        "LeaseGrant answers request {}, but no request is waiting",
                        g.seq
                    ),
                }));
            }
        }
        if s.fenced && Instant::now() < s.until {
            self.lift(&mut s)?;
        }
        Ok(())
    }

    fn lift(&self, s: &mut State) -> Result<(), MigrateError> {
        if !s.fenced {
            return Ok(());
        }
        self.fence
            .lift(self.run)
            .map_err(|source| MigrateError::Vm {
                op: VmOp::Fence,
                source,
            })?;
        s.fenced = false;
        tracing::info!("post-copy lease renewed: the VM runs again");
        Ok(())
    }

    fn lapse(&self, s: &mut State) -> Result<(), MigrateError> {
        if s.fenced || s.owned {
            return Ok(());
        }
        self.fence.fence().map_err(|source| MigrateError::Vm {
            op: VmOp::Fence,
            source,
        })?;
        s.fenced = true;
        s.lapses += 1;
        tracing::warn!(
            lease = %units::format_duration(self.period),
            "post-copy lease lapsed with no renewal from the source: the VM is fenced (paused) until one arrives"
        );
        Ok(())
    }

    /// The watchdog's step: fences if the lease lapsed.
    fn check(&self) -> Result<(), MigrateError> {
        let mut s = self.state();
        if Instant::now() >= s.until {
            self.lapse(&mut s)?;
        }
        Ok(())
    }

    /// The next request, if one is due now (every quarter lease).
    fn due(&self) -> Option<LeaseRequest> {
        let mut s = self.state();
        let now = Instant::now();
        if s.owned || now < s.next_ask {
            return None;
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        s.next_ask = now + self.period / 4;
        s.asked.push_back((seq, now));
        Some(LeaseRequest { seq })
    }

    /// How often the watchdog looks: a tenth of the lease, 1 to 20 ms.
    fn tick(&self) -> Duration {
        (self.period / 10).clamp(Duration::from_millis(1), Duration::from_millis(20))
    }
}

/// The watchdog thread: fences the VM the moment its lease lapses. It
/// never writes to the network, so a stalled link cannot hold it up.
pub(super) fn watch(lease: &Lease, stop: &AtomicBool) -> Result<(), MigrateError> {
    while !stop.load(Ordering::SeqCst) && !lease.owned() {
        lease.check()?;
        std::thread::sleep(lease.tick());
    }
    Ok(())
}

/// The requesting thread: asks the source to renew, every quarter lease.
/// A request is recorded and written under the writer's lock, so a
/// reconnection (which swaps the writer) never sees half of it. A failed
/// write is left to the session thread, which sees the broken link too.
pub(super) fn ask<W: Write + Send>(lease: &Lease, w: &SharedWriter<W>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) && !lease.owned() {
        let mut w = lock(w);
        if let Some(req) = lease.due()
            && let Err(e) = w.lease_request(&req).and_then(|()| w.flush())
        {
            tracing::debug!("lease request not sent: {e}");
        }
        drop(w);
        std::thread::sleep(lease.tick());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::VmError;
    use std::sync::atomic::AtomicU32;

    #[derive(Default)]
    struct Counting {
        fenced: AtomicU32,
        lifted: AtomicU32,
    }

    impl Fence for Counting {
        fn fence(&self) -> Result<(), VmError> {
            self.fenced.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn lift(&self, _run: bool) -> Result<(), VmError> {
            self.lifted.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn lease(period: Duration) -> (Lease, Arc<Counting>) {
        let f = Arc::new(Counting::default());
        (Lease::new(period, f.clone(), true, Instant::now()), f)
    }

    #[test]
    fn a_lapsed_lease_fences_once_and_a_grant_lifts_it() {
        let (l, f) = lease(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        l.check().unwrap();
        l.check().unwrap();
        assert_eq!(f.fenced.load(Ordering::SeqCst), 1);
        assert_eq!(l.lapses(), 1);
        // A grant whose request is itself older than a lease keeps it fenced.
        let req = l.due().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        l.granted(&LeaseGrant {
            seq: req.seq,
            flags: 0,
        })
        .unwrap();
        assert_eq!(f.lifted.load(Ordering::SeqCst), 0);
        l.granted(&LeaseGrant {
            seq: 0,
            flags: LeaseGrant::FINAL,
        })
        .unwrap();
        assert_eq!(f.lifted.load(Ordering::SeqCst), 1);
        assert!(l.owned());
        assert!(l.due().is_none(), "no request once the VM is ours");
    }

    #[test]
    fn a_grant_out_of_order_is_refused_and_changes_nothing() {
        let (l, _) = lease(Duration::from_secs(60));
        let first = l.due().unwrap();
        let e = l
            .granted(&LeaseGrant {
                seq: first.seq + 1,
                flags: 0,
            })
            .unwrap_err();
        assert!(
            e.to_string().contains("oldest request not answered is 1"),
            "{e}"
        );
        // The request is still waiting: its own grant is taken.
        l.granted(&LeaseGrant {
            seq: first.seq,
            flags: 0,
        })
        .unwrap();
        let e = l.granted(&LeaseGrant { seq: 9, flags: 0 }).unwrap_err();
        assert!(e.to_string().contains("no request is waiting"), "{e}");
    }

    #[test]
    fn a_commit_after_the_lease_starts_the_vm_fenced() {
        let (l, f) = lease(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!l.may_start().unwrap());
        assert_eq!(f.fenced.load(Ordering::SeqCst), 1);
        let (l, _) = lease(Duration::from_secs(60));
        assert!(l.may_start().unwrap());
    }
}
