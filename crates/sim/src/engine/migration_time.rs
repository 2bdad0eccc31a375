//! How long a live migration takes: the paper's model and iterative pre-copy.

use crate::scenario::{Migration, MigrationModel};

/// How long a live migration takes.
pub trait MigrationTime {
    /// Seconds to migrate `ram_mb` over `bw_mb_s`; `dirty_rate_mb_s` is the
    /// VM's page-dirtying rate when known.
    fn duration_s(&self, ram_mb: f64, bw_mb_s: f64, dirty_rate_mb_s: Option<f64>) -> f64;
}

/// The paper's model: memory size / available bandwidth.
#[derive(Debug, Clone, Copy)]
pub struct MemoryOverBandwidth;

impl MigrationTime for MemoryOverBandwidth {
    fn duration_s(&self, ram_mb: f64, bw_mb_s: f64, _: Option<f64>) -> f64 {
        ram_mb / bw_mb_s
    }
}

/// Iterative pre-copy: each round resends what the previous round's duration
/// let the guest dirty, until little is left, the rounds run out, or it stops
/// shrinking; then stop-and-copy. The dirty rate is the VM's own when the
/// pre-copy engine reports one, else `default_dirty_rate_mb_s`.
#[derive(Debug, Clone, Copy)]
pub struct PreCopy {
    pub default_dirty_rate_mb_s: f64,
    pub max_rounds: u32,
    pub stop_copy_mb: f64,
}

impl MigrationTime for PreCopy {
    fn duration_s(&self, ram_mb: f64, bw_mb_s: f64, dirty: Option<f64>) -> f64 {
        let d = dirty.unwrap_or(self.default_dirty_rate_mb_s);
        let mut to_send = ram_mb;
        let mut total = 0.0;
        for _ in 0..self.max_rounds {
            let t = to_send / bw_mb_s;
            total += t;
            let next = (d * t).min(ram_mb);
            if next <= self.stop_copy_mb || next >= to_send {
                to_send = next;
                break;
            }
            to_send = next;
        }
        total + to_send / bw_mb_s
    }
}

/// The model a scenario's `[migration]` section names.
pub(crate) fn from_scenario(m: &Migration) -> Box<dyn MigrationTime + Send + Sync> {
    match m.model {
        MigrationModel::Precopy => Box::new(PreCopy {
            default_dirty_rate_mb_s: m.dirty_rate_mb_s,
            max_rounds: m.max_rounds,
            stop_copy_mb: m.stop_copy_mb,
        }),
        MigrationModel::MemoryOverBandwidth => Box::new(MemoryOverBandwidth),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precopy_converges_or_stops() {
        let m = PreCopy {
            default_dirty_rate_mb_s: 0.0,
            max_rounds: 30,
            stop_copy_mb: 50.0,
        };
        // Nothing dirtied: one round plus an empty stop-and-copy.
        assert_eq!(m.duration_s(1000.0, 100.0, None), 10.0);
        // Dirty at 50 MB/s with 100 MB/s: 10 s, then 500 MB (5 s), 250 (2.5),
        // 125 (1.25), 62.5 (0.625) -> 31.25 MB left <= 50: stop-and-copy 0.3125 s.
        let d = m.duration_s(1000.0, 100.0, Some(50.0));
        assert!(
            (d - (10.0 + 5.0 + 2.5 + 1.25 + 0.625 + 0.3125)).abs() < 1e-9,
            "{d}"
        );
        // Not converging (dirty faster than the link): stops, copies the rest.
        let d = m.duration_s(1000.0, 100.0, Some(200.0));
        assert!((d - 20.0).abs() < 1e-9, "{d}");
        assert_eq!(MemoryOverBandwidth.duration_s(870.0, 62.5, None), 13.92);
    }
}
