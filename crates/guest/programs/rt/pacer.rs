//! Pacing a program's work to a rate without bursts.

use super::clock::{now, tsc_hz};

/// Token-bucket pacer for `rate` units/s (0 = unlimited). Catch-up after a
/// pause is capped at 10 ms worth of work, so there is no burst.
pub struct Pacer {
    per_sec: u64,
    tokens: u64,
    last: u64,
    cap: u64,
}
impl Pacer {
    pub fn new(per_sec: u64) -> Pacer {
        let hz = tsc_hz();
        Pacer {
            per_sec,
            tokens: 0,
            last: now(),
            cap: (per_sec * hz / 100).max(hz),
        }
    }
    /// May one more unit be done now?
    #[inline]
    pub fn take(&mut self) -> bool {
        if self.per_sec == 0 {
            return true;
        }
        let hz = tsc_hz();
        if self.tokens < hz {
            let t = now();
            let dt = t.saturating_sub(self.last).min(hz);
            self.last = t;
            self.tokens = (self.tokens + dt * self.per_sec).min(self.cap);
            if self.tokens < hz {
                return false;
            }
        }
        self.tokens -= hz;
        true
    }
    /// The TSC time the next unit is allowed, after a `take` that said no.
    pub fn next_at(&self) -> u64 {
        let missing = tsc_hz().saturating_sub(self.tokens);
        self.last + missing.div_ceil(self.per_sec.max(1))
    }
    /// Forgets accumulated allowance (e.g. after an idle phase).
    pub fn reset(&mut self) {
        self.tokens = 0;
        self.last = now();
    }
}
