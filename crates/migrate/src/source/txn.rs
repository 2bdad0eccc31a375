//! The source's side of post-copy transactions (docs/PROTOCOL.md,
//! "Transactions"): the reader thread stages each one as it arrives, and
//! only a complete transaction that adds up reaches the engine, which
//! checks its number and pages and applies it to the retained copy (memory
//! and the saved state) all at once, then acknowledges it. After a failure,
//! once the destination's lease has certainly run out, the VM runs here
//! again from the latest applied transaction.

use vm_memory::{Bytes, GuestAddress};
use vmstate::VmState;
use wire::{Message, TxnAck, TxnPlan};

use super::engine::Engine;
use crate::bitmap::{PAGE_SIZE, PageLayout};
use crate::error::{MigrateError, VmOp};
use crate::report::{Outcome, VmLocation};
use crate::vm::SourceVm;

/// A complete transaction as received: nothing applied yet.
#[derive(Debug)]
pub(super) struct Txn {
    pub(super) seq: u64,
    pub(super) pages: Vec<(u64, Vec<u8>)>,
    pub(super) zeros: Vec<(u64, u64)>,
    pub(super) state: Box<VmState>,
}

/// A transaction being read (on the reader thread).
pub(super) struct Staging {
    open: Option<Open>,
    /// Most pages (data and zero) one transaction may carry: the guest's,
    /// so a destination cannot make the source stage without bound.
    max_pages: u64,
}

struct Open {
    seq: u64,
    /// Pages staged so far, data and zero.
    count: u64,
    pages: Vec<(u64, Vec<u8>)>,
    zeros: Vec<(u64, u64)>,
    state: Option<Box<VmState>>,
}

impl Staging {
    pub(super) fn new(max_pages: u64) -> Staging {
        Staging {
            open: None,
            max_pages,
        }
    }

    /// Counts `n` more pages into `o`; refused past the guest's size.
    fn add(o: &mut Open, n: u64, max: u64) -> Result<(), String> {
        o.count = o.count.saturating_add(n);
        if o.count > max {
            return Err(format!(
                "transaction {} carries more than the guest's {max} pages",
                o.seq
            ));
        }
        Ok(())
    }

    /// Takes `m` if it belongs to a transaction: `Ok(None)` staged,
    /// `Ok(Some(txn))` complete, `Err` refused (nothing of it applies).
    /// Messages outside transactions come back untouched.
    pub(super) fn feed<'a>(
        &mut self,
        m: Message<'a>,
    ) -> Result<Result<Option<Txn>, Message<'a>>, String> {
        match (m, &mut self.open) {
            (Message::TxnBegin(b), None) => {
                self.open = Some(Open {
                    seq: b.seq,
                    count: 0,
                    pages: Vec::new(),
                    zeros: Vec::new(),
                    state: None,
                });
                Ok(Ok(None))
            }
            (Message::TxnBegin(b), Some(o)) => Err(format!(
                "transaction {} began inside transaction {}",
                b.seq, o.seq
            )),
            (Message::Pages { gpa, data }, Some(o)) if o.state.is_none() => {
                Self::add(o, data.len() as u64 / PAGE_SIZE, self.max_pages)?;
                o.pages.push((gpa, data.to_vec()));
                Ok(Ok(None))
            }
            (Message::ZeroPages(runs), Some(o)) if o.state.is_none() => {
                for (gpa, n) in runs {
                    Self::add(o, n, self.max_pages)?;
                    o.zeros.push((gpa, n));
                }
                Ok(Ok(None))
            }
            (Message::State(s), Some(o)) if o.state.is_none() => {
                o.state = Some(s);
                Ok(Ok(None))
            }
            (Message::TxnEnd(e), Some(_)) => {
                let o = self.open.take().expect("open");
                let pages: u64 = o.pages.iter().map(|p| p.1.len() as u64 / PAGE_SIZE).sum();
                let zero: u64 = o.zeros.iter().map(|z| z.1).sum();
                let Some(state) = o.state else {
                    return Err(format!("transaction {} ended without its state", o.seq));
                };
                if e.seq != o.seq || e.pages != pages || e.zero_pages != zero {
                    return Err(format!(
                        "transaction {} ended as {} with {} + {} pages, but carried {pages} + {zero}",
                        o.seq, e.seq, e.pages, e.zero_pages
                    ));
                }
                Ok(Ok(Some(Txn {
                    seq: o.seq,
                    pages: o.pages,
                    zeros: o.zeros,
                    state,
                })))
            }
            (
                m @ (Message::TxnEnd(_)
                | Message::Pages { .. }
                | Message::ZeroPages(_)
                | Message::State(_)),
                o,
            ) => Err(match o {
                Some(o) => format!("{} after the state of transaction {}", m.name(), o.seq),
                None => format!("{} outside a transaction", m.name()),
            }),
            (m, _) => Ok(Err(m)),
        }
    }
}

impl Txn {
    /// Checks the number against the last applied (`after`; after a
    /// reconnection `resend` also allows a number at or below it: the
    /// destination sends again what it had no acknowledgement for) and
    /// every page against guest memory.
    pub(super) fn check(
        &self,
        after: u64,
        resend: bool,
        layout: &PageLayout,
    ) -> Result<(), MigrateError> {
        let in_order = self.seq == after + 1 || (resend && self.seq <= after + 1);
        if !in_order {
            return Err(MigrateError::Protocol(format!(
                "transaction {} out of order (the last applied is {after})",
                self.seq
            )));
        }
        let outside = |gpa: u64, n: u64| {
            MigrateError::Protocol(format!(
                "transaction {} names {n} pages at {gpa:#x}, outside guest memory",
                self.seq
            ))
        };
        for (gpa, data) in &self.pages {
            let n = data.len() as u64 / PAGE_SIZE;
            layout
                .check_range(*gpa, data.len() as u64)
                .ok_or_else(|| outside(*gpa, n))?;
        }
        for &(gpa, n) in &self.zeros {
            n.checked_mul(PAGE_SIZE)
                .and_then(|len| layout.check_range(gpa, len))
                .ok_or_else(|| outside(gpa, n))?;
        }
        Ok(())
    }
}

impl<V: SourceVm> Engine<'_, V> {
    /// Tells the destination to send transactions, if it can and a lease
    /// guards the VM (without one the source could never take it back).
    pub(super) fn plan_transactions(&mut self) -> Result<(), MigrateError> {
        if !self.txn_offered || self.lease.is_zero() || self.sync_interval.is_zero() {
            return Ok(());
        }
        self.w
            .txn_plan(&TxnPlan {
                interval_ns: self.sync_interval.as_nanos() as u64,
            })
            .map_err(self.wire_err("sending the transaction plan"))?;
        self.txns_planned = true;
        Ok(())
    }

    /// A complete transaction: checked whole, then applied and acknowledged.
    pub(super) fn apply_txn(&mut self, t: Txn) -> Result<(), MigrateError> {
        t.check(self.synced, self.txn_resend, &self.layout)?;
        if let Some(j) = self.journal.as_mut() {
            j.applying(t.seq);
        }
        let mem = self.vm.memory();
        for (gpa, data) in &t.pages {
            mem.write_slice(data, GuestAddress(*gpa))
                .map_err(|source| MigrateError::Memory { gpa: *gpa, source })?;
        }
        const ZERO: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];
        for &(gpa, n) in &t.zeros {
            for k in 0..n {
                let a = gpa + k * PAGE_SIZE;
                mem.write_slice(&ZERO, GuestAddress(a))
                    .map_err(|source| MigrateError::Memory { gpa: a, source })?;
            }
        }
        if let Some(j) = self.journal.as_mut() {
            j.applied(t.seq, &t.state);
        }
        self.synced_state = Some(t.state);
        self.synced = t.seq;
        self.txn_resend = false;
        self.txns_applied += 1;
        self.w
            .txn_ack(&TxnAck { seq: t.seq })
            .and_then(|()| self.w.flush())
            .map_err(self.wire_err("acknowledging a transaction"))
    }

    /// After a failure, the lease certainly over: the VM runs here again
    /// from the latest applied transaction (0: the switch). Returns false
    /// if there is nothing to resume from.
    pub(super) fn take_back(&mut self, e: &MigrateError) -> bool {
        let Some(state) = self.synced_state.take() else {
            return false;
        };
        let seq = self.synced;
        let what = self.what_broke();
        // Before the VM runs here: its memory moves on from the record.
        if let Some(j) = self.journal.as_mut() {
            j.ended();
        }
        self.stop_logging();
        match self.vm.take_back(*state) {
            Ok(()) => {
                tracing::warn!("{what} broke ({e}); resumed on the source from transaction {seq}");
                self.report.vm_location = VmLocation::Source;
                self.report.outcome = Outcome::Recovered(format!(
                    "{what} broke ({e}); the destination's lease ran out, so it is fenced: resumed on the source from transaction {seq}"
                ));
                true
            }
            Err(source) => {
                let err = MigrateError::Vm {
                    op: VmOp::Transaction,
                    source,
                };
                tracing::error!("could not resume the VM on the source: {err}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use vmstate::VmConfig;
    use wire::{TxnBegin, TxnEnd};

    use super::*;

    fn state() -> Box<VmState> {
        let config = VmConfig {
            memory_bytes: 1 << 20,
            vcpus: 1,
            regions: vec![(0, 1 << 20)],
            cmdline: String::new(),
            kernel: "test".into(),
            tsc_khz: 0,
        };
        Box::new(crate::fake::fake_state(&config, Vec::new()))
    }

    const PAGE: [u8; 4096] = [7; 4096];

    /// Feeds a whole transaction `seq` of one page at `gpa`, ending with `end`.
    fn feed(st: &mut Staging, seq: u64, gpa: u64, end: TxnEnd) -> Result<Option<Txn>, String> {
        assert!(matches!(
            st.feed(Message::TxnBegin(TxnBegin { seq }))?,
            Ok(None)
        ));
        assert!(matches!(
            st.feed(Message::Pages { gpa, data: &PAGE })?,
            Ok(None)
        ));
        assert!(matches!(st.feed(Message::State(state()))?, Ok(None)));
        st.feed(Message::TxnEnd(end))
            .map(|r| r.unwrap_or_else(|m| panic!("{} passed through", m.name())))
    }

    fn end(seq: u64, pages: u64) -> TxnEnd {
        TxnEnd {
            seq,
            pages,
            zero_pages: 0,
        }
    }

    #[test]
    fn bad_transactions_are_refused_whole_with_one_error() {
        let layout = PageLayout::new(&[(0, 1 << 20)]).unwrap();
        let mut st = Staging::new(1 << 20);
        // Complete and in order: accepted.
        let t = feed(&mut st, 1, 0x1000, end(1, 1)).unwrap().unwrap();
        t.check(0, false, &layout).unwrap();
        // Out of order: transaction 3 after 1.
        let t = feed(&mut st, 3, 0x1000, end(3, 1)).unwrap().unwrap();
        let e = t.check(1, false, &layout).unwrap_err().to_string();
        assert!(e.contains("transaction 3 out of order"), "{e}");
        // After a reconnection the first may repeat the last applied.
        t.check(3, true, &layout).unwrap();
        // Pages outside guest memory.
        let t = feed(&mut st, 2, 1 << 20, end(2, 1)).unwrap().unwrap();
        let e = t.check(1, false, &layout).unwrap_err().to_string();
        assert!(e.contains("outside guest memory"), "{e}");
        // Truncated: the end counts a page that never came.
        let e = feed(&mut st, 2, 0x1000, end(2, 2)).unwrap_err();
        assert!(e.contains("carried 1 + 0"), "{e}");
        // Truncated: no state before the end.
        let mut st = Staging::new(1 << 20);
        st.feed(Message::TxnBegin(TxnBegin { seq: 1 }))
            .unwrap()
            .unwrap();
        let e = st.feed(Message::TxnEnd(end(1, 0))).unwrap_err();
        assert!(e.contains("without its state"), "{e}");
        // A new transaction inside one, and pages outside any.
        let mut st = Staging::new(1 << 20);
        st.feed(Message::TxnBegin(TxnBegin { seq: 1 }))
            .unwrap()
            .unwrap();
        let e = st.feed(Message::TxnBegin(TxnBegin { seq: 2 })).unwrap_err();
        assert!(e.contains("began inside transaction 1"), "{e}");
        let mut st = Staging::new(1 << 20);
        let e = st
            .feed(Message::Pages {
                gpa: 0,
                data: &PAGE,
            })
            .unwrap_err();
        assert!(e.contains("outside a transaction"), "{e}");
        // Other messages pass through untouched.
        assert!(matches!(
            st.feed(Message::Ready).unwrap(),
            Err(Message::Ready)
        ));
    }

    #[test]
    fn a_transaction_larger_than_the_guest_is_refused_as_it_arrives() {
        let mut st = Staging::new(2);
        st.feed(Message::TxnBegin(TxnBegin { seq: 1 }))
            .unwrap()
            .unwrap();
        st.feed(Message::Pages {
            gpa: 0,
            data: &PAGE,
        })
        .unwrap()
        .unwrap();
        let e = st
            .feed(Message::Pages {
                gpa: 0x1000,
                data: &[7; 8192],
            })
            .unwrap_err();
        assert!(e.contains("more than the guest's 2 pages"), "{e}");
    }
}
