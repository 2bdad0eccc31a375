//! The source's side of the post-copy lease (docs/SAFETY.md, "Leases"):
//! it answers each of the destination's requests with a grant, remembers
//! when it last granted, and after a failure waits until every lease it
//! granted has certainly run out before it says where the VM is.

use std::time::{Duration, Instant};

use wire::LeaseGrant;

use super::engine::Engine;
use super::incoming::FromDest;
use crate::error::MigrateError;
use crate::vm::SourceVm;

/// Default lease: the destination runs the VM at most this long past the
/// source's last grant (`--lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_millis(500);
/// Fixed part of the margin: the destination's watchdog tick (at most
/// 20 ms), the vCPUs' exit, and scheduling delays on a loaded host.
const MARGIN_FIXED: Duration = Duration::from_millis(100);

/// How long past a lease the source waits before the VM is certainly
/// fenced on the destination: 10 % of the lease (monotonic clocks that run
/// up to 10 % apart; NTP slews at most 0.05 %) plus a fixed 100 ms.
pub fn lease_margin(lease: Duration) -> Duration {
    lease / 10 + MARGIN_FIXED
}

impl<V: SourceVm> Engine<'_, V> {
    /// The destination's lease request `seq`: grant it now.
    pub(super) fn grant(&mut self, seq: u64) -> Result<(), MigrateError> {
        self.granted_at = Some(Instant::now());
        self.w
            .lease_grant(&LeaseGrant { seq, flags: 0 })
            .and_then(|()| self.w.flush())
            .map_err(self.wire_err("renewing the destination's lease"))
    }

    /// The VM is the destination's for good: no lease from now on. After
    /// this the VM may never run here again.
    pub(super) fn grant_for_good(&mut self) -> Result<(), MigrateError> {
        self.final_sent = true;
        if let Some(j) = self.journal.as_mut() {
            j.given_up();
        }
        self.w
            .lease_grant(&LeaseGrant {
                seq: 0,
                flags: LeaseGrant::FINAL,
            })
            .and_then(|()| self.w.flush())
            .map_err(self.wire_err("giving the VM up to the destination"))
    }

    /// After the final grant: the destination's Owned. Until it comes the
    /// copy here stays, since the grant may have been lost on the way.
    pub(super) fn await_owned(&mut self) -> Result<(), MigrateError> {
        loop {
            match self.incoming.wait(
                "waiting for the destination to confirm it owns the VM",
                false,
            )? {
                FromDest::Owned(id) if id == self.migration_id => return Ok(()),
                // Sent before the final grant arrived there: void now.
                FromDest::LeaseRequest(_) | FromDest::PageRequest(_) | FromDest::Txn(_) => {}
                m => return Err(self.incoming.unexpected(m, "instead of Owned")),
            }
        }
    }

    /// After a failure with a lease out: waits (without renewing) until
    /// the last lease granted, plus the margin, has passed. Returns how
    /// long ago the lease ran out there, by this clock, or `None` if no
    /// lease was granted.
    pub(super) fn outlast_lease(&mut self) -> Option<Duration> {
        let granted = self.granted_at?;
        let over = granted + self.lease + lease_margin(self.lease);
        let now = Instant::now();
        if now < over {
            tracing::info!(
                wait = %units::format_duration(over - now),
                "post-copy broke: waiting for the destination's lease to run out"
            );
            std::thread::sleep(over - now);
        }
        Some(Instant::now().duration_since(granted + self.lease))
    }
}
