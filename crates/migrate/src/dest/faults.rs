//! The destination's fault thread in post-copy: each first touch of a
//! missing page becomes a request for the block around it, and the time
//! every faulting vCPU waited is logged for the report.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wire::PageRequest;

use super::postcopy::{Switch, mem_err};
use super::session::{SharedWriter, lock};
use crate::bitmap::{DirtyBitmap, PAGE_SIZE, PageLayout};
use crate::error::MigrateError;

/// Pages requested per fault: the aligned block around the faulting page.
/// 16 pages (64 KiB) measured best here (docs/MIGRATION.md, "Block size").
pub const FAULT_BLOCK_PAGES: u64 = 16;
/// The largest block a fault may ask for (1 MiB): one record's worth.
pub const MAX_FAULT_BLOCK_PAGES: u64 = 256;
/// How long the fault thread waits for a fault before checking for the end.
const FAULT_POLL: Duration = Duration::from_millis(20);

/// A bitmap two threads share: the session sets, the fault thread reads.
pub(super) struct SharedBits(pub(super) Vec<AtomicU64>);

impl SharedBits {
    pub(super) fn new(len: u64) -> Self {
        SharedBits((0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }
    pub(super) fn get(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (i % 64)) != 0)
    }
    pub(super) fn set(&self, i: u64) {
        if let Some(w) = self.0.get((i / 64) as usize) {
            w.fetch_or(1 << (i % 64), Ordering::Release);
        }
    }
}

/// Faults waiting for their page, and how long the served ones waited.
#[derive(Default)]
pub(super) struct FaultLog {
    pub(super) waiting: Mutex<HashMap<u64, Instant>>,
    served: Mutex<Vec<Duration>>,
    count: AtomicU64,
}

impl FaultLog {
    pub(super) fn fault(&self, idx: u64) {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.entry(idx).or_insert_with(|| {
            self.count.fetch_add(1, Ordering::Relaxed);
            Instant::now()
        });
    }

    pub(super) fn installed(&self, first: u64, n: u64) {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if w.is_empty() {
            return;
        }
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        for i in first..first + n {
            if let Some(t) = w.remove(&i) {
                served.push(t.elapsed());
            }
        }
    }

    /// Time the faulting vCPUs waited in all.
    pub(super) fn total_wait(&self) -> Duration {
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .sum()
    }

    /// Faults, p50 and p99 of their wait, ns.
    pub(super) fn summary(&self) -> (u64, u64, u64) {
        let mut s = self
            .served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s.sort();
        let q = |f: f64| {
            s.get(((s.len() as f64 - 1.0) * f).round() as usize)
                .map_or(0, |d| d.as_nanos() as u64)
        };
        (self.count.load(Ordering::Relaxed), q(0.5), q(0.99))
    }
}

/// The fault thread: a touch of a page of the set not received yet asks
/// the source for its block (once); a touch of any other page that is not
/// present is a zero page never written, installed here.
pub(super) fn fault_loop<W: Write + Send>(
    switch: &Switch,
    layout: &PageLayout,
    w: &SharedWriter<W>,
    stop: &AtomicBool,
) -> Result<(), MigrateError> {
    let mut requested = DirtyBitmap::new(&Arc::new(layout.clone()));
    let mut epoch = switch.epoch.load(Ordering::SeqCst);
    while !stop.load(Ordering::SeqCst) {
        let now = switch.epoch.load(Ordering::SeqCst);
        if now != epoch {
            // Requests on the broken link are lost: ask again on a new fault.
            requested = DirtyBitmap::new(&Arc::new(layout.clone()));
            epoch = now;
        }
        let gpa = match switch.memory.wait_fault(FAULT_POLL) {
            Ok(Some(gpa)) => gpa,
            Ok(None) => continue,
            Err(_) if stop.load(Ordering::SeqCst) => break,
            Err(source) => return Err(mem_err(source)),
        };
        let Some(idx) = layout.index_of(gpa) else {
            continue;
        };
        if switch.received.get(idx) {
            continue;
        }
        if !switch.missing.get(idx) {
            if let Err(source) = switch.memory.install_zero(gpa & !(PAGE_SIZE - 1), 1)
                && !stop.load(Ordering::SeqCst)
            {
                return Err(mem_err(source));
            }
            continue;
        }
        switch.faults.fault(idx);
        if requested.get(idx) {
            continue;
        }
        let Some(req) = block_request(switch, layout, &mut requested, idx) else {
            continue;
        };
        // A request lost with a broken link is asked again after a
        // reconnection; the session thread sees the failure itself.
        let mut w = lock(w);
        if let Err(e) = w.page_request(&req).and_then(|()| w.flush()) {
            tracing::debug!("page request not sent: {e}");
        }
    }
    Ok(())
}

/// The request for the aligned block around `idx`: from its first to its
/// last page of the set neither received nor requested; marks them requested.
fn block_request(
    switch: &Switch,
    layout: &PageLayout,
    requested: &mut DirtyBitmap,
    idx: u64,
) -> Option<PageRequest> {
    let region = layout
        .regions()
        .iter()
        .find(|r| idx >= r.first_index && idx < r.first_index + r.pages)?;
    let off = idx - region.first_index;
    let start = region.first_index + off - off % switch.block;
    let end = (start + switch.block).min(region.first_index + region.pages);
    let wanted = |i: u64| switch.missing.get(i) && !switch.received.get(i) && !requested.get(i);
    let first = (start..end).find(|&i| wanted(i))?;
    let last = (first..end).rev().find(|&i| wanted(i))?;
    for i in first..=last {
        requested.set(i);
    }
    Some(PageRequest {
        gpa: layout.gpa_of(first)?,
        pages: (last - first + 1) as u32,
    })
}
