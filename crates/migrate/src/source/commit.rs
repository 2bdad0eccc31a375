//! How a migration ends on the source: Commit (the point of no return),
//! or rollback (the VM runs on here) from any state before it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::engine::Engine;
use super::incoming::FromDest;
use super::ms;
use super::relink::Back;
use crate::bitmap::DirtyBitmap;
use crate::error::MigrateError;
use crate::progress::Phase;
use crate::report::{MigrationReport, Outcome, VmLocation};
use crate::vm::SourceVm;

impl<V: SourceVm> Engine<'_, V> {
    /// Sends Commit; from here on the VM never runs on this host again.
    /// In a leased post-copy a lost acknowledgement is no longer in doubt
    /// once the lease Commit gave has run out.
    /// A link that fails in that window is dialled again, and Commit sent
    /// again on the new one.
    pub(super) fn commit(&mut self) -> Result<(), MigrateError> {
        let t_commit = Instant::now();
        let mut result = self.send_commit();
        if self.postcopy.is_some() && self.granted_at.is_some() {
            while let Err(e) = result {
                let e = self.incoming.explain(e);
                result = match self.redial(e) {
                    Ok(Back::Link(held)) => self.commit_again(held, t_commit),
                    // Only a final grant, after PostcopyDone, makes it so.
                    Ok(Back::Owned) => Err(MigrateError::Protocol(
                        "the destination says it owns the VM before it resumed it".into(),
                    )),
                    Err(e) => {
                        self.enter(Phase::RolledBack);
                        self.settle_interrupted(&e, false);
                        return Err(e);
                    }
                };
            }
        }
        result
    }

    /// After a reconnection in the commit window: Commit again. Whether or
    /// not the first one arrived, the destination answers Resumed (which
    /// may follow its lease requests, transactions and page requests: the
    /// pages it asks for are sent anyway, as all it does not hold).
    fn commit_again(&mut self, held: DirtyBitmap, t_commit: Instant) -> Result<(), MigrateError> {
        self.resumed = Some(held);
        self.txn_resend = true;
        self.w
            .commit(self.migration_id)
            .and_then(|()| self.w.flush())
            .map_err(self.wire_err("sending Commit again"))?;
        loop {
            match self
                .incoming
                .wait("waiting for the destination to resume the VM", false)?
            {
                FromDest::Resumed(ack) => {
                    self.acknowledged(t_commit, ack);
                    return Ok(());
                }
                FromDest::LeaseRequest(seq) => self.grant(seq)?,
                FromDest::Txn(t) => self.apply_txn(*t)?,
                FromDest::PageRequest(_) => {}
                m => return Err(self.incoming.unexpected(m, "instead of Resumed")),
            }
        }
    }

    fn send_commit(&mut self) -> Result<(), MigrateError> {
        self.enter(Phase::Commit);
        // The point of no return is *starting* to write Commit: once any of
        // its bytes may have left, the destination may run the VM.
        self.report.vm_location = VmLocation::Unknown;
        self.vm.retire();
        let t_commit = Instant::now();
        if self.postcopy.is_some() && !self.lease.is_zero() {
            // Commit answers Ready: the destination's first lease.
            self.granted_at = Some(t_commit);
        }
        if let Some(p) = self.paused_at {
            self.report.pause_ms = Some(ms(t_commit.duration_since(p)));
        }
        let sent = self
            .w
            .commit(self.migration_id)
            .and_then(|()| self.w.flush());
        if let Err(e) = sent {
            let err = MigrateError::from_wire(e, "sending Commit", self.stall);
            self.report.outcome = Outcome::InDoubt(format!(
                "sending Commit failed ({err}); the VM is retired here and may or may not run on the destination"
            ));
            return Err(err);
        }
        match self
            .incoming
            .wait("waiting for the destination to resume the VM", false)
        {
            Ok(FromDest::Resumed(ack)) => {
                self.acknowledged(t_commit, ack);
                Ok(())
            }
            Ok(m) => {
                let err = self.incoming.unexpected(m, "instead of Resumed");
                self.report.outcome = Outcome::InDoubt(format!(
                    "after Commit: {err}; the VM is retired here and may or may not run on the destination"
                ));
                Err(err)
            }
            Err(err) => {
                self.report.outcome = Outcome::InDoubt(format!(
                    "no acknowledgement after Commit ({err}); the VM is retired here and may or may not run on the destination"
                ));
                Err(err)
            }
        }
    }

    /// The destination runs the VM: the migration is complete. Downtime
    /// ends at the resume, estimated from the Commit/Resumed round trip
    /// (after a reconnection an upper bound).
    fn acknowledged(&mut self, t_commit: Instant, ack: wire::Resumed) {
        let t_ack = Instant::now();
        let round_trip = t_ack.duration_since(t_commit);
        let resume = Duration::from_nanos(ack.commit_to_resume_ns);
        // The network part of the round trip, split evenly between the two directions.
        let one_way = round_trip.saturating_sub(resume) / 2;
        let resumed_at = (t_commit + one_way + resume).min(t_ack);
        if let Some(p) = self.paused_at {
            let downtime = resumed_at.duration_since(p);
            self.report.downtime_ms = Some(ms(downtime));
            self.report.downtime_target_missed = downtime > self.max_downtime;
        }
        self.report.vm_location = VmLocation::Destination;
        if self.postcopy.is_none() {
            self.stop_logging();
        }
        // After a switch to post-copy logging stays on until the end
        // (`finish`): turning it off takes milliseconds, and the guest's
        // first page requests are waiting for this thread.
        if self.leased {
            // Complete once the destination holds the VM for good (FINAL).
        } else if self.postcopy.is_some() {
            // Runs there, but complete only once it holds every page.
            self.enter(Phase::Postcopy);
        } else {
            self.report.outcome = Outcome::Completed;
            self.enter(Phase::Done);
        }
        tracing::debug!(
            resumed_unix_ns = ack.resumed_unix_ns,
            now_unix_ns = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            "destination resumed"
        );
    }

    /// A leased pre-copy, after its stop-and-copy round: a switch to
    /// post-copy with nothing to fetch. The destination then runs the VM
    /// after Commit only under the lease, and every failure in the commit
    /// window has the post-copy outcome: the source takes the VM back once
    /// the lease has certainly run out (docs/PROTOCOL.md, "The commit rule").
    pub(super) fn lease_commit(&mut self) -> Result<(), MigrateError> {
        let none = DirtyBitmap::new(&self.layout);
        self.w
            .postcopy_begin(none.words(), self.lease.as_nanos() as u64)
            .map_err(self.wire_err("sending the lease"))?;
        self.plan_transactions()?;
        self.leased = true;
        self.report.leased_commit = true;
        self.postcopy = Some(none);
        Ok(())
    }

    /// Any failure before Commit: the VM runs on here.
    pub(super) fn rollback(&mut self, err: MigrateError) -> MigrateError {
        // Before the VM runs on: a record of the switch would be stale.
        if let Some(j) = self.journal.as_mut() {
            j.ended();
        }
        self.enter(Phase::RolledBack);
        self.stop_logging();
        if self.throttle > 0.0 {
            if let Err(e) = self.vm.throttle(0.0) {
                tracing::warn!(error = %e, "could not release the vCPU throttle on rollback");
            }
            self.throttle = 0.0;
        }
        let mut err = err;
        if self.paused_at.is_some()
            && self.was_running
            && let Err(source) = self.vm.resume()
        {
            err = MigrateError::ResumeFailed {
                first: Box::new(err),
                source,
            };
        }
        if let Some(p) = self.paused_at {
            self.report.pause_ms = Some(ms(p.elapsed()));
        }
        if !err.peer_knows() {
            let _ = self.w.abort(err.abort_code(), &err.to_string());
            let _ = self.w.flush();
        }
        self.report.vm_location = VmLocation::Source;
        self.report.outcome = match err {
            MigrateError::Cancelled => Outcome::Cancelled,
            ref e => Outcome::Failed(e.to_string()),
        };
        err
    }

    /// Turns dirty logging off if it is on (a failure is logged: nothing
    /// depends on it any more).
    pub(super) fn stop_logging(&mut self) {
        if self.logging {
            if let Err(e) = self.vm.stop_dirty_log() {
                tracing::warn!(error = %e, "could not turn dirty logging off");
            }
            self.logging = false;
        }
    }

    /// The report, with the totals filled in. The migration's time ends
    /// here: freeing a completed post-copy's memory and turning the dirty
    /// log off come after (50-300 ms for 512 MiB of shared memory on a
    /// loaded host), as in QEMU, whose `total-time` does not count its
    /// cleanup either.
    pub(super) fn finish(mut self) -> MigrationReport {
        let total_time_ms = ms(self.started.elapsed());
        if self.release {
            self.vm.release();
        }
        self.stop_logging();
        let bytes_sent = self.bytes();
        let mut report = self.report;
        report.total_time_ms = total_time_ms;
        report.bytes_sent = bytes_sent;
        for (stream, reader) in self.links {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            report.bytes_received += reader.join().unwrap_or(0);
        }
        report.finish_totals();
        report
    }
}
