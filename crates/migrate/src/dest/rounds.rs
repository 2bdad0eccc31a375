//! The destination's rounds: pre-copy page data until the final round
//! (or the switch to post-copy), then the State record.

use std::io::{Read, Write};

use vm_memory::{Bytes, GuestAddress};
use vmstate::VmState;
use wire::{Message, MessageReader, RoundBegin, RoundEnd};

use super::session::{Arrival, Receiver, SharedWriter, Stage, lock, peer_aborted};
use crate::bitmap::PAGE_SIZE;
use crate::error::MigrateError;
use crate::vm::DestinationVm;

impl<VM: DestinationVm> Receiver<'_, VM> {
    /// BetweenRounds and InRound until the final round ends, then
    /// AwaitState: returns the State record.
    pub(super) fn receive_rounds<R: Read, W: Write>(
        &mut self,
        r: &mut MessageReader<R>,
        w: &SharedWriter<W>,
        arrival: &mut Arrival,
    ) -> Result<Box<VmState>, MigrateError> {
        loop {
            let msg = r
                .next("receiving pages")
                .map_err(self.wire("receiving pages"))?;
            match (msg, self.stage) {
                (Message::RoundBegin(b), Stage::BetweenRounds) => self.round_begin(&b, arrival)?,
                (Message::Pages { gpa, data }, Stage::InRound { .. }) => {
                    self.pages(gpa, data, arrival)?
                }
                (Message::ZeroPages(runs), Stage::InRound { .. }) => {
                    for (gpa, count) in runs {
                        self.zero_run(gpa, count, arrival)?;
                    }
                }
                (Message::Stale(st), Stage::InRound { .. } | Stage::BetweenRounds) => {
                    self.stale(&st, arrival)?
                }
                (Message::RoundEnd(e), Stage::InRound { round, last }) => {
                    self.round_end(&e, round, last, arrival)?
                }
                (Message::PostcopyBegin(b), Stage::BetweenRounds) => {
                    arrival.postcopy = Some(self.postcopy_begin(&b, &arrival.layout)?);
                    self.stage = Stage::AwaitState;
                }
                (Message::TxnPlan(p), Stage::AwaitState) => self.txn_plan(&p, arrival)?,
                (Message::State(s), Stage::AwaitState) => return Ok(s),
                // Everything before it is applied: say so at once.
                (Message::Drain(d), _) => {
                    let mut w = lock(w);
                    w.drained(&d)
                        .and_then(|()| w.flush())
                        .map_err(self.wire("answering Drain"))?;
                }
                (Message::Abort(a), _) => return Err(peer_aborted(a)),
                (m, stage) => {
                    return Err(MigrateError::Protocol(format!(
                        "unexpected {} ({})",
                        m.name(),
                        stage.describe()
                    )));
                }
            }
        }
    }

    /// TxnPlan: only after PostcopyBegin with a lease, once, and only if
    /// we offered transactions.
    fn txn_plan(&mut self, p: &wire::TxnPlan, arrival: &mut Arrival) -> Result<(), MigrateError> {
        let switch = arrival.postcopy.as_mut().filter(|s| s.lease.is_some());
        let Some(switch) = switch.filter(|_| self.txn_accepted) else {
            return Err(MigrateError::Protocol(
                "TxnPlan without a leased post-copy that accepted transactions".into(),
            ));
        };
        if switch.txn_interval.is_some() {
            return Err(MigrateError::Protocol("a second TxnPlan".into()));
        }
        switch.txn_interval = Some(std::time::Duration::from_nanos(p.interval_ns));
        Ok(())
    }

    fn round_begin(&mut self, b: &RoundBegin, arrival: &Arrival) -> Result<(), MigrateError> {
        if b.round <= arrival.last_round {
            return Err(MigrateError::Protocol(format!(
                "round {} after round {}",
                b.round, arrival.last_round
            )));
        }
        self.stage = Stage::InRound {
            round: b.round,
            last: b.is_final(),
        };
        Ok(())
    }

    fn round_end(
        &mut self,
        e: &RoundEnd,
        round: u32,
        last: bool,
        arrival: &mut Arrival,
    ) -> Result<(), MigrateError> {
        if e.round != round {
            return Err(MigrateError::Protocol(format!(
                "RoundEnd for round {} inside round {round}",
                e.round
            )));
        }
        arrival.last_round = round;
        self.report.rounds = round;
        self.stage = if last {
            Stage::AwaitState
        } else {
            Stage::BetweenRounds
        };
        Ok(())
    }

    /// Page data, written into guest memory.
    fn pages(&mut self, gpa: u64, data: &[u8], arrival: &mut Arrival) -> Result<(), MigrateError> {
        let first = arrival
            .layout
            .check_range(gpa, data.len() as u64)
            .ok_or_else(|| {
                MigrateError::Protocol(format!(
                    "pages {gpa:#x}..{:#x} lie outside guest memory",
                    gpa.saturating_add(data.len() as u64)
                ))
            })?;
        self.vm_memory()?
            .write_slice(data, GuestAddress(gpa))
            .map_err(|source| MigrateError::Memory { gpa, source })?;
        let n = data.len() as u64 / PAGE_SIZE;
        arrival.written.set_run(first, n);
        self.report.pages += n;
        Ok(())
    }

    /// A run of zero pages: only pages that received data need zeroing.
    fn zero_run(
        &mut self,
        gpa: u64,
        count: u64,
        arrival: &mut Arrival,
    ) -> Result<(), MigrateError> {
        let first = count
            .checked_mul(PAGE_SIZE)
            .and_then(|len| arrival.layout.check_range(gpa, len))
            .ok_or_else(|| {
                MigrateError::Protocol(format!(
                    "zero run at {gpa:#x} of {count} pages lies outside guest memory"
                ))
            })?;
        const ZERO_PAGE: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];
        for p in 0..count {
            // Pages never written here are still zero: no need to touch them.
            if arrival.written.get(first + p) {
                let a = gpa + p * PAGE_SIZE;
                self.vm_memory()?
                    .write_slice(&ZERO_PAGE, GuestAddress(a))
                    .map_err(|source| MigrateError::Memory { gpa: a, source })?;
                arrival.written.unset(first + p);
            }
        }
        self.report.zero_pages += count;
        Ok(())
    }
}
