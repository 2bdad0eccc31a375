//! The token bucket that caps the rate at which the engine writes to the socket.

use std::time::{Duration, Instant};

use units::Bandwidth;

/// A token bucket over bytes: callers [`consume`](Self::consume) what they
/// are about to send and are put to sleep while the bucket is in debt.
/// Debt is allowed, so a write larger than the burst is paced correctly
/// on average instead of being refused.
#[derive(Debug)]
pub struct TokenBucket {
    rate: Option<Bandwidth>,
    /// Bytes available (negative: debt).
    tokens: f64,
    burst: f64,
    last: Instant,
}

/// Burst allowance: this much time worth of tokens, but at least 64 KiB.
const BURST_TIME: Duration = Duration::from_millis(10);
const MIN_BURST: f64 = 64.0 * 1024.0;

impl TokenBucket {
    /// A bucket at `rate`; `None` = unlimited.
    pub fn new(rate: Option<Bandwidth>) -> Self {
        let mut b = TokenBucket {
            rate: None,
            tokens: 0.0,
            burst: MIN_BURST,
            last: Instant::now(),
        };
        b.set_rate(rate);
        b.tokens = b.burst;
        b
    }

    /// Changes the rate from now on (tokens earned so far are kept, up to the new burst).
    pub fn set_rate(&mut self, rate: Option<Bandwidth>) {
        self.refill();
        self.rate = rate;
        self.burst = match rate {
            Some(r) => (r.bytes_per_sec() as f64 * BURST_TIME.as_secs_f64()).max(MIN_BURST),
            None => MIN_BURST,
        };
        self.tokens = self.tokens.min(self.burst);
    }

    /// Current rate (`None` = unlimited).
    pub fn rate(&self) -> Option<Bandwidth> {
        self.rate
    }

    fn refill(&mut self) {
        let now = Instant::now();
        if let Some(r) = self.rate {
            let dt = now.duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + dt * r.bytes_per_sec() as f64).min(self.burst);
        }
        self.last = now;
    }

    /// How long the caller must wait before sending after taking `bytes`
    /// (zero if tokens were available). Does not sleep.
    pub fn take(&mut self, bytes: u64) -> Duration {
        let Some(r) = self.rate else {
            return Duration::ZERO;
        };
        self.refill();
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / r.bytes_per_sec() as f64)
        }
    }

    /// Takes `bytes` and sleeps until the bucket is out of debt.
    pub fn consume(&mut self, bytes: u64) {
        let wait = self.take(bytes);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_accounts_debt() {
        // 8 Mbit/s = 1 MB/s: taking 1 MB beyond the burst puts ~1 s of debt on the bucket.
        let mut b = TokenBucket::new(Bandwidth::from_bits_per_sec(8_000_000));
        let first = b.take(64 * 1024);
        assert!(first.is_zero());
        let wait = b.take(1_000_000);
        assert!(wait > Duration::from_millis(500), "{wait:?}");
        assert!(wait <= Duration::from_millis(1001), "{wait:?}");
        let mut u = TokenBucket::new(None);
        assert!(u.take(u64::MAX / 2).is_zero());
    }
}
