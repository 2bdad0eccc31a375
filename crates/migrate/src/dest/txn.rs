//! The destination's transactions in post-copy (docs/PROTOCOL.md,
//! "Transactions"): every interval the VM stops briefly, the pages the
//! guest dirtied since the last boundary are copied and its state taken,
//! and after it runs on they go to the source as one transaction. Serial
//! output stays held until the source acknowledges the transaction that
//! covers it, so nothing seen outside is lost if the source takes the VM
//! back. Pages installed from the source are its own content: not tracked.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use wire::{MAX_PAGES_PER_RECORD, TxnBegin, TxnEnd};

use super::lease::Lease;
use super::session::{SharedWriter, lock};
use crate::bitmap::{DirtyBitmap, PAGE_SIZE, PageLayout};
use crate::error::{MigrateError, VmOp};
use crate::vm::TxnVm;

/// How long a boundary waits for the vCPUs to stop; one that waits for a
/// missing page longer skips this boundary (the next one covers it).
const CAPTURE_WAIT: Duration = Duration::from_millis(20);
/// Records written per hold of the writer: page requests go between.
const RECORDS_PER_HOLD: usize = 16;

/// Transactions of one post-copy, shared by the thread that sends them
/// and the session thread that reads the acknowledgements.
pub(super) struct Txns {
    vm: Arc<dyn TxnVm>,
    interval: Duration,
    layout: Arc<PageLayout>,
    state: Mutex<State>,
    /// Counters for the report.
    pub(super) sent: AtomicU64,
    pub(super) skipped: AtomicU64,
    pub(super) bytes: AtomicU64,
}

struct State {
    next_seq: u64,
    acked: u64,
    /// Sent and not acknowledged, oldest first: (seq, its pages, output mark).
    unacked: VecDeque<(u64, DirtyBitmap, u64)>,
    /// The link epoch the numbering belongs to.
    epoch: u64,
}

impl Txns {
    /// Starts tracking and holding output; the VM has not run yet.
    pub(super) fn begin(
        vm: Arc<dyn TxnVm>,
        interval: Duration,
        layout: &Arc<PageLayout>,
    ) -> Result<Txns, MigrateError> {
        vm.begin().map_err(|source| MigrateError::Vm {
            op: VmOp::Transaction,
            source,
        })?;
        Ok(Txns {
            vm,
            interval,
            layout: Arc::clone(layout),
            state: Mutex::new(State {
                next_seq: 1,
                acked: 0,
                unacked: VecDeque::new(),
                epoch: 0,
            }),
            sent: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The source acknowledged `seq`: it must be the oldest sent and not
    /// acknowledged; the output it covers is released.
    pub(super) fn acked(&self, seq: u64) -> Result<(), MigrateError> {
        let mut s = self.state();
        match s.unacked.front() {
            Some(&(oldest, _, mark)) if oldest == seq => {
                s.unacked.pop_front();
                s.acked = seq;
                self.vm.release_output(Some(mark));
                Ok(())
            }
            front => Err(MigrateError::Protocol(match front {
                Some((oldest, _, _)) => format!(
                    "TxnAck for transaction {seq}, but the oldest not acknowledged is {oldest}"
                ),
                None => format!("TxnAck for transaction {seq}, but none is waiting"),
            })),
        }
    }

    /// Last transaction the source acknowledged.
    pub(super) fn last_acked(&self) -> u64 {
        self.state().acked
    }

    /// The VM is ours for good: every held byte goes out, tracking ends.
    pub(super) fn finish(&self) {
        self.vm.release_output(None);
    }

    /// One boundary: capture, then send. Errors of the link are left to
    /// the session thread (the transaction stays unacknowledged and its
    /// pages go again in the next one).
    fn boundary<W: Write>(
        &self,
        w: &SharedWriter<W>,
        lease: Option<&Lease>,
        epoch: &AtomicU64,
    ) -> Result<(), MigrateError> {
        let mut dirty = DirtyBitmap::new(&self.layout);
        for (_, d, _) in &self.state().unacked {
            dirty.or_assign(d);
        }
        let mut data = Vec::new();
        let captured = {
            let _held = lease.map(Lease::hold);
            self.vm
                .capture(CAPTURE_WAIT, &mut dirty, &mut |mem, d| {
                    data = copy_pages(mem, d)
                })
                .map_err(|source| MigrateError::Vm {
                    op: VmOp::Transaction,
                    source,
                })?
        };
        let Some(cap) = captured else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let w_held = lock(w);
        let now = epoch.load(Ordering::SeqCst);
        let seq = {
            let mut s = self.state();
            if s.epoch != now {
                // A new link: what the old one carried unacknowledged is
                // in `dirty` already; number from the last acknowledged on.
                s.epoch = now;
                s.unacked.clear();
                s.next_seq = s.acked + 1;
            }
            let seq = s.next_seq;
            s.next_seq += 1;
            s.unacked.push_back((seq, dirty.clone(), cap.output_mark));
            seq
        };
        let before = w_held.bytes_written();
        let mut held = Some(w_held);
        let out = Outgoing {
            seq,
            dirty: &dirty,
            data: &data,
            state: &cap.state,
        };
        let result = self.send(w, &mut held, &out, epoch, now);
        let w_held = held.unwrap_or_else(|| lock(w));
        let written = w_held.bytes_written().saturating_sub(before);
        drop(w_held);
        self.bytes.fetch_add(written, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!("transaction {seq} not sent: {e}"),
        }
        Ok(())
    }
}

/// One captured transaction, to be written.
struct Outgoing<'a> {
    seq: u64,
    dirty: &'a DirtyBitmap,
    data: &'a [u8],
    state: &'a vmstate::VmState,
}

impl Txns {
    /// Writes `out`, letting go of the writer every few records; gives up
    /// if the link changed meanwhile.
    fn send<'w, W: Write>(
        &self,
        w: &'w SharedWriter<W>,
        held: &mut Option<MutexGuard<'w, wire::MessageWriter<W>>>,
        out: &Outgoing<'_>,
        epoch: &AtomicU64,
        now: u64,
    ) -> Result<(), wire::WireError> {
        let closed = wire::WireError::Closed {
            during: "sending a transaction",
        };
        let mut records = 0usize;
        let (mut pages, mut zero_pages) = (0u64, 0u64);
        let mut g = held.take().ok_or(wire::WireError::Closed {
            during: "sending a transaction",
        })?;
        g.txn_begin(&TxnBegin { seq: out.seq })?;
        for (gpa, bytes) in runs(&self.layout, out.dirty, out.data) {
            let n = bytes.len() as u64 / PAGE_SIZE;
            if bytes.chunks(PAGE_SIZE as usize).all(vmstate::is_zero_page) {
                g.zero_pages(&[(gpa, n)])?;
                zero_pages += n;
            } else {
                g.pages(gpa, bytes)?;
                pages += n;
            }
            records += 1;
            if records.is_multiple_of(RECORDS_PER_HOLD) {
                g.flush()?;
                drop(g);
                g = lock(w);
                if epoch.load(Ordering::SeqCst) != now {
                    *held = Some(g);
                    return Err(closed);
                }
            }
        }
        g.state(out.state)?;
        g.txn_end(&TxnEnd {
            seq: out.seq,
            pages,
            zero_pages,
        })?;
        let r = g.flush();
        *held = Some(g);
        r
    }
}

/// The sending thread: a boundary every interval until `stop`.
pub(super) fn run<W: Write>(
    txns: &Txns,
    w: &SharedWriter<W>,
    lease: Option<&Lease>,
    epoch: &AtomicU64,
    stop: &AtomicBool,
) -> Result<(), MigrateError> {
    let mut next = Instant::now() + txns.interval;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(10)));
            continue;
        }
        next = now + txns.interval;
        txns.boundary(w, lease, epoch)?;
    }
    Ok(())
}

/// The content of every page set in `dirty`, in index order.
fn copy_pages(mem: &GuestMemoryMmap, dirty: &DirtyBitmap) -> Vec<u8> {
    let layout = dirty.layout();
    let mut out = vec![0u8; (dirty.count() * PAGE_SIZE) as usize];
    let mut at = 0usize;
    for (first, n) in dirty.runs() {
        for i in first..first + n {
            if let Some(gpa) = layout.gpa_of(i) {
                // A page that cannot be read is sent as zero: it never was.
                let _ = mem.read_slice(&mut out[at..at + PAGE_SIZE as usize], GuestAddress(gpa));
            }
            at += PAGE_SIZE as usize;
        }
    }
    out
}

/// `data` (pages of `dirty` in index order) cut into records: runs of
/// pages contiguous in guest memory, at most one record's worth each.
fn runs<'a>(
    layout: &'a PageLayout,
    dirty: &'a DirtyBitmap,
    data: &'a [u8],
) -> impl Iterator<Item = (u64, &'a [u8])> + 'a {
    let page = PAGE_SIZE as usize;
    let mut at = 0usize;
    dirty.runs().flat_map(move |(first, n)| {
        let mut out = Vec::new();
        let mut i = first;
        while i < first + n {
            let gpa = layout.gpa_of(i);
            let mut k = 1;
            while i + k < first + n
                && k < MAX_PAGES_PER_RECORD as u64
                && gpa.is_some()
                && layout.gpa_of(i + k) == gpa.map(|g| g + k * PAGE_SIZE)
            {
                k += 1;
            }
            if let Some(gpa) = gpa {
                out.push((gpa, &data[at..at + k as usize * page]));
            }
            at += k as usize * page;
            i += k;
        }
        out
    })
}
