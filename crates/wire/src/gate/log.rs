//! Refused peers, one line each, at a rate a flood cannot turn into a
//! disk-filler: a token bucket for the lines, and a periodic summary of
//! the refusals it did not log one by one.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::pending::Busy;
use crate::error::WireError;

/// Why the gate refused a peer.
#[derive(Debug)]
pub enum Refusal {
    /// No handshake slot free: closed at once, nothing read.
    Busy(Busy),
    /// The handshake failed (not Ferry, wrong version or secret, a closed
    /// connection, the deadline).
    Handshake(WireError),
    /// The peer did not complete mutual TLS: no certificate, one the
    /// cluster's CA did not sign, an expired one, not TLS at all.
    Tls(std::io::Error),
    /// No thread could be started for the handshake.
    Resources(std::io::Error),
}

/// Longest reason logged; a reason may quote what the peer sent.
const MAX_REASON: usize = 200;

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Busy(Busy::Full(n)) => write!(f, "{n} connections are already authenticating"),
            Refusal::Busy(Busy::HostFull(n)) => {
                write!(
                    f,
                    "{n} connections from this host are already authenticating"
                )
            }
            Refusal::Handshake(e) if e.is_timeout() => f.write_str("did not authenticate in time"),
            Refusal::Handshake(e) => write!(f, "{e}"),
            Refusal::Tls(e) if is_timeout(e) => {
                f.write_str("did not finish its TLS handshake in time")
            }
            Refusal::Tls(e) => write!(f, "{e}"),
            Refusal::Resources(e) => write!(f, "cannot start its handshake: {e}"),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

impl Refusal {
    /// The reason on one line: control characters escaped, clipped.
    pub(super) fn line(&self) -> String {
        let mut out = String::new();
        for c in self.to_string().chars() {
            if out.len() >= MAX_REASON {
                out.push('…');
                break;
            }
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// What to log for one refusal.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Lines {
    /// First, the refusals not logged since the last summary.
    pub summary: Option<u64>,
    /// Then this refusal's own line.
    pub this: bool,
}

/// The rate limit of refusal lines.
#[derive(Debug)]
pub(super) struct RefusalLog {
    burst: f64,
    interval: Duration,
    tokens: f64,
    refilled: Instant,
    /// Refusals not logged since the last summary.
    suppressed: u64,
    summarized: Instant,
}

impl RefusalLog {
    pub(super) fn new(burst: u32, interval: Duration, now: Instant) -> RefusalLog {
        let burst = f64::from(burst.max(1));
        RefusalLog {
            burst,
            interval: interval.max(Duration::from_millis(1)),
            tokens: burst,
            refilled: now,
            suppressed: 0,
            summarized: now,
        }
    }

    /// A refusal at `now`: what to log for it.
    pub(super) fn refusal(&mut self, now: Instant) -> Lines {
        let elapsed = now.saturating_duration_since(self.refilled);
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() / self.interval.as_secs_f64()).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Lines {
                summary: self.take_summary(now),
                this: true,
            }
        } else {
            self.suppressed += 1;
            Lines {
                summary: self.due(now),
                this: false,
            }
        }
    }

    /// Called now and then: a summary, when one is due.
    pub(super) fn due(&mut self, now: Instant) -> Option<u64> {
        if self.suppressed > 0 && now.saturating_duration_since(self.summarized) >= self.interval {
            self.take_summary(now)
        } else {
            None
        }
    }

    /// The refusals not logged yet, due or not (the gate closes).
    pub(super) fn take_summary(&mut self, now: Instant) -> Option<u64> {
        let n = std::mem::take(&mut self.suppressed);
        self.summarized = now;
        (n > 0).then_some(n)
    }
}

/// Logs one refused peer.
pub(super) fn refused(peer: SocketAddr, reason: &Refusal) {
    tracing::warn!(%peer, reason = %reason.line(), "refused a connection before authentication");
}

/// Logs the refusals not logged one by one.
pub(super) fn summary(n: u64, interval: Duration) {
    tracing::warn!(
        refused = n,
        "refused {n} more connections before authentication (not logged one by one; at most one line per {interval:?})"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_in_a_burst_then_one_line_and_one_summary_per_interval() {
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut log = RefusalLog::new(3, 10 * sec, t0);
        let mut lines = 0;
        let mut summarized = 0;
        // 1000 refusals a second for a minute.
        for ms in 0..60_000u64 {
            let now = t0 + Duration::from_millis(ms);
            let l = log.refusal(now);
            lines += u64::from(l.this);
            summarized += l.summary.unwrap_or(0);
            if ms % 200 == 0 {
                summarized += log.due(now).unwrap_or(0);
            }
        }
        // The burst, then one line per 10 s.
        assert!((8..=10).contains(&lines), "{lines}");
        // Every refusal is either logged or counted in a summary, but the
        // last few seconds' (no summary due yet).
        let unaccounted = 60_000 - lines - summarized;
        assert!(unaccounted <= 10_000, "{unaccounted}");
        // Quiet again: the rest comes out in one summary, then nothing.
        let later = t0 + 120 * sec;
        assert_eq!(log.due(later), Some(unaccounted));
        assert_eq!(log.due(later + 60 * sec), None);
    }

    #[test]
    fn reasons_are_one_clipped_line() {
        let e = WireError::AuthFailed(format!("evil\nline {}", "x".repeat(500)));
        let line = Refusal::Handshake(e).line();
        assert!(!line.contains('\n') && line.contains("\\n"), "{line}");
        assert!(line.chars().count() <= MAX_REASON + 2, "{}", line.len());
    }
}
