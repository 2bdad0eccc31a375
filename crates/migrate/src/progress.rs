//! Live progress that another thread (API, progress bar) reads while a
//! migration runs, in the spirit of QEMU's `query-migrate`; and the token
//! that cancels a migration from another thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Phase of a running migration, for progress displays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    #[default]
    Setup,
    Iterative,
    StopAndCopy,
    StateTransfer,
    Commit,
    /// The VM runs on the destination; its remaining pages are being sent.
    Postcopy,
    Done,
    RolledBack,
}

impl Phase {
    const ALL: [Phase; 8] = [
        Phase::Setup,
        Phase::Iterative,
        Phase::StopAndCopy,
        Phase::StateTransfer,
        Phase::Commit,
        Phase::Postcopy,
        Phase::Done,
        Phase::RolledBack,
    ];

    fn from_u8(v: u8) -> Phase {
        Phase::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or(Phase::RolledBack)
    }

    fn to_u8(self) -> u8 {
        Phase::ALL.iter().position(|p| *p == self).unwrap_or(7) as u8
    }
}

/// Live progress, updated by the engine and read from any thread.
#[derive(Debug, Default)]
pub struct Progress {
    phase: AtomicU8,
    round: AtomicU32,
    remaining_bytes: AtomicU64,
    bytes_sent: AtomicU64,
    resent_bytes: AtomicU64,
    memory_bytes: AtomicU64,
    rate_bps: AtomicU64,
    dirty_rate_bps: AtomicU64,
    estimated_downtime_us: AtomicU64,
}

/// A consistent-enough copy of [`Progress`] for display or JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProgressSnapshot {
    pub phase: Phase,
    pub round: u32,
    /// Bytes of guest memory still to send as things stand: the pages of
    /// the current round not yet looked at (QEMU's `remaining`). Pages the
    /// guest dirties meanwhile join it when the round ends.
    #[serde(alias = "remaining_dirty_bytes")]
    pub remaining_bytes: u64,
    /// Bytes written to the connection so far (QEMU's `transferred`).
    pub bytes_sent: u64,
    /// Guest memory sent again because the guest dirtied it after it was
    /// sent: the cost of pre-copy beyond one copy of memory.
    pub resent_bytes: u64,
    pub memory_bytes: u64,
    /// Transfer rate of the current or last round, bits/s.
    pub rate_bps: u64,
    /// Rate at which the guest dirtied memory in the last round, bits/s
    /// (QEMU's `dirty-pages-rate`, in bits).
    pub dirty_rate_bps: u64,
    /// Expected downtime if the VM were stopped now (remaining / rate), ms
    /// (QEMU's `expected-downtime`).
    pub estimated_downtime_ms: f64,
}

impl ProgressSnapshot {
    /// Memory that needs no sending as things stand (memory - remaining):
    /// it reaches `memory_bytes` only when nothing is left.
    pub fn settled_bytes(&self) -> u64 {
        self.memory_bytes.saturating_sub(self.remaining_bytes)
    }
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress::default())
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProgressSnapshot {
            phase: Phase::from_u8(self.phase.load(Ordering::Relaxed)),
            round: self.round.load(Ordering::Relaxed),
            remaining_bytes: load(&self.remaining_bytes),
            bytes_sent: load(&self.bytes_sent),
            resent_bytes: load(&self.resent_bytes),
            memory_bytes: load(&self.memory_bytes),
            rate_bps: load(&self.rate_bps),
            dirty_rate_bps: load(&self.dirty_rate_bps),
            estimated_downtime_ms: load(&self.estimated_downtime_us) as f64 / 1000.0,
        }
    }

    pub(crate) fn set_phase(&self, p: Phase) {
        self.phase.store(p.to_u8(), Ordering::Relaxed);
        if p == Phase::Done {
            self.remaining_bytes.store(0, Ordering::Relaxed);
            self.estimated_downtime_us.store(0, Ordering::Relaxed);
        }
    }
    pub(crate) fn set_round(&self, r: u32) {
        self.round.store(r, Ordering::Relaxed);
    }
    pub(crate) fn set_memory(&self, b: u64) {
        self.memory_bytes.store(b, Ordering::Relaxed);
        self.remaining_bytes.store(b, Ordering::Relaxed);
    }
    pub(crate) fn set_sent(&self, b: u64) {
        self.bytes_sent.store(b, Ordering::Relaxed);
    }
    pub(crate) fn add_resent(&self, b: u64) {
        self.resent_bytes.fetch_add(b, Ordering::Relaxed);
    }
    pub(crate) fn set_dirty_rate(&self, bps: f64) {
        self.dirty_rate_bps.store(bps as u64, Ordering::Relaxed);
    }
    /// Updates remaining bytes, rate, and the downtime estimate derived from them.
    pub(crate) fn set_remaining(&self, remaining: u64, rate_bps: f64) {
        self.remaining_bytes.store(remaining, Ordering::Relaxed);
        self.rate_bps.store(rate_bps as u64, Ordering::Relaxed);
        let est = if rate_bps > 0.0 {
            remaining as f64 * 8.0 / rate_bps * 1e6
        } else {
            0.0
        };
        self.estimated_downtime_us
            .store(est.min(u64::MAX as f64) as u64, Ordering::Relaxed);
    }
}

/// Cancels a running migration from another thread. Honoured between and
/// within rounds, up to the moment Commit is sent.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        CancelToken::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Asks a running pre-copy to switch to post-copy at its next page batch,
/// like QEMU's `migrate-start-postcopy`. The engine says once the
/// destination answered Start whether it can.
#[derive(Clone, Debug, Default)]
pub struct PostcopySwitch(Arc<SwitchState>);

#[derive(Debug, Default)]
struct SwitchState {
    requested: AtomicBool,
    /// 0: not known yet, 1: the destination can, 2: it cannot.
    available: AtomicU8,
}

impl PostcopySwitch {
    pub fn new() -> Self {
        PostcopySwitch::default()
    }

    /// Asks for the switch; refused if the destination cannot run the VM
    /// in post-copy (known once it accepted the VM).
    pub fn request(&self) -> Result<(), PostcopyRefused> {
        if self.available() == Some(false) {
            return Err(PostcopyRefused);
        }
        self.0.requested.store(true, Ordering::SeqCst);
        Ok(())
    }

    pub fn is_requested(&self) -> bool {
        self.0.requested.load(Ordering::SeqCst)
    }

    /// Whether the destination can take the VM in post-copy (`None`: not known yet).
    pub fn available(&self) -> Option<bool> {
        match self.0.available.load(Ordering::SeqCst) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }

    pub(crate) fn set_available(&self, yes: bool) {
        self.0
            .available
            .store(if yes { 1 } else { 2 }, Ordering::SeqCst);
    }
}

/// The destination of this migration cannot run the VM in post-copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the destination cannot run this VM in post-copy (an older Ferry, or no userfaultfd there)"
)]
pub struct PostcopyRefused;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_estimates_downtime() {
        let p = Progress::new();
        p.set_memory(4_000_000);
        p.set_phase(Phase::Iterative);
        p.set_remaining(1_000_000, 8_000_000.0);
        p.add_resent(4096);
        p.set_dirty_rate(1e6);
        let s = p.snapshot();
        assert_eq!(s.phase, Phase::Iterative);
        assert!((s.estimated_downtime_ms - 1000.0).abs() < 0.01);
        assert_eq!((s.resent_bytes, s.dirty_rate_bps), (4096, 1_000_000));
        assert_eq!(s.settled_bytes(), 3_000_000);
        p.set_phase(Phase::Done);
        assert_eq!(p.snapshot().settled_bytes(), 4_000_000);
        let c = CancelToken::new();
        let c2 = c.clone();
        c2.cancel();
        assert!(c.is_cancelled());
    }

    #[test]
    fn phases_round_trip_and_old_field_names_still_parse() {
        for p in Phase::ALL {
            assert_eq!(Phase::from_u8(p.to_u8()), p);
        }
        let s: ProgressSnapshot =
            serde_json::from_str(r#"{"phase":"iterative","remaining_dirty_bytes":7}"#).unwrap();
        assert_eq!(s.remaining_bytes, 7);
    }
}
