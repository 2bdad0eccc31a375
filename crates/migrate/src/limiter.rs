//! Bandwidth values ("1Gbit", "500MB"), durations ("300ms"), and the token
//! bucket that caps the rate at which the engine writes to the socket.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A rate in bits per second (always > 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bandwidth(u64);

/// A bandwidth or duration string that cannot be understood.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("empty {what}")]
    Empty { what: &'static str },
    #[error("'{input}': expected a number followed by a unit, e.g. {example}")]
    NoNumber {
        input: String,
        example: &'static str,
    },
    #[error("'{input}': unknown unit '{unit}' (use one of {known})")]
    UnknownUnit {
        input: String,
        unit: String,
        known: &'static str,
    },
    #[error(
        "'{input}': unit '{unit}' is ambiguous: write '{bits}' for bits or '{bytes}' for bytes per second"
    )]
    AmbiguousUnit {
        input: String,
        unit: String,
        bits: String,
        bytes: String,
    },
    #[error("'{input}': must be greater than zero")]
    Zero { input: String },
    #[error("'{input}': too large")]
    TooLarge { input: String },
}

const BANDWIDTH_UNITS: &str = "bit, Kbit, Mbit, Gbit, Tbit, bps, Kbps, Mbps, Gbps (bits/s); B, KB, MB, GB, TB, KiB, MiB, GiB, TiB (bytes/s); an optional '/s' suffix";

impl Bandwidth {
    /// `bits` per second; `None` if zero.
    pub fn from_bits_per_sec(bits: u64) -> Option<Self> {
        (bits > 0).then_some(Bandwidth(bits))
    }

    /// Bits per second.
    pub fn bits_per_sec(self) -> u64 {
        self.0
    }

    /// Bytes per second (rounded down, at least 1).
    pub fn bytes_per_sec(self) -> u64 {
        (self.0 / 8).max(1)
    }

    /// Parses "1Gbit", "100Mbit", "500MB", "2GiB/s", "1e9bit" (decimal SI prefixes for
    /// bit and B units, binary for KiB/MiB/GiB/TiB). Whitespace between number and unit
    /// is allowed; a bare number is bits/s.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ParseError::Empty { what: "bandwidth" });
        }
        let (value, unit) = split_number(s).ok_or_else(|| ParseError::NoNumber {
            input: input.to_string(),
            example: "1Gbit, 100Mbit or 500MB",
        })?;
        let unit = unit.trim();
        let unit = unit
            .strip_suffix("/s")
            .or_else(|| unit.strip_suffix("/S"))
            .unwrap_or(unit)
            .trim();
        let factor_bits: f64 = match bits_factor(unit) {
            Some(f) => f,
            None => {
                let lower = unit.to_ascii_lowercase();
                let prefix = &lower[..lower.len().saturating_sub(1)];
                if lower.ends_with('b')
                    && !unit.ends_with('B')
                    && matches!(prefix, "k" | "m" | "g" | "t")
                {
                    let p = prefix.to_ascii_uppercase();
                    return Err(ParseError::AmbiguousUnit {
                        input: input.to_string(),
                        unit: unit.to_string(),
                        bits: format!("{p}bit"),
                        bytes: format!("{p}B"),
                    });
                }
                return Err(ParseError::UnknownUnit {
                    input: input.to_string(),
                    unit: unit.to_string(),
                    known: BANDWIDTH_UNITS,
                });
            }
        };
        let bits = value * factor_bits;
        if !bits.is_finite() || bits >= u64::MAX as f64 {
            return Err(ParseError::TooLarge {
                input: input.to_string(),
            });
        }
        let bits = bits.round() as u64;
        Bandwidth::from_bits_per_sec(bits).ok_or_else(|| ParseError::Zero {
            input: input.to_string(),
        })
    }
}

/// Bits per unit for bandwidth units; `None` if unknown or ambiguous.
fn bits_factor(unit: &str) -> Option<f64> {
    let lower = unit.to_ascii_lowercase();
    let si = |p: &str| -> Option<f64> {
        Some(match p {
            "" => 1.0,
            "k" => 1e3,
            "m" => 1e6,
            "g" => 1e9,
            "t" => 1e12,
            _ => return None,
        })
    };
    if unit.is_empty() {
        return Some(1.0);
    }
    if let Some(p) = lower
        .strip_suffix("bit")
        .or_else(|| lower.strip_suffix("bps"))
    {
        return si(p);
    }
    if let Some(p) = lower.strip_suffix("ib")
        && unit.ends_with("iB")
    {
        let f = match p {
            "k" => 1024.0,
            "m" => 1024.0 * 1024.0,
            "g" => 1024.0 * 1024.0 * 1024.0,
            "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return None,
        };
        return Some(f * 8.0);
    }
    if let Some(p) = unit.strip_suffix('B') {
        return si(&p.to_ascii_lowercase()).map(|f| f * 8.0);
    }
    None
}

/// Splits "12.5Mbit" into (12.5, "Mbit").
fn split_number(s: &str) -> Option<(f64, &str)> {
    let end = s
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_digit()
                || c == '.'
                || ((c == 'e' || c == 'E')
                    && s[i + 1..].starts_with(|d: char| d.is_ascii_digit())
                    && i > 0))
        })
        .map_or(s.len(), |(i, _)| i);
    let value: f64 = s[..end].parse().ok()?;
    (value >= 0.0).then_some((value, &s[end..]))
}

impl FromStr for Bandwidth {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Bandwidth::parse(s)
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_bits(self.0 as f64, f)
    }
}

/// Writes a bit rate with an SI prefix ("1.00 Gbit/s").
pub(crate) fn fmt_bits(bits: f64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let (v, p) = if bits >= 1e12 {
        (bits / 1e12, "T")
    } else if bits >= 1e9 {
        (bits / 1e9, "G")
    } else if bits >= 1e6 {
        (bits / 1e6, "M")
    } else if bits >= 1e3 {
        (bits / 1e3, "K")
    } else {
        (bits, "")
    };
    write!(f, "{v:.2} {p}bit/s")
}

/// Parses "300ms", "2s", "1.5s", "500us", "1m" into a duration (a bare number is milliseconds).
pub fn parse_duration(input: &str) -> Result<Duration, ParseError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(ParseError::Empty { what: "duration" });
    }
    let (value, unit) = split_number(s).ok_or_else(|| ParseError::NoNumber {
        input: input.to_string(),
        example: "300ms or 2s",
    })?;
    let secs = match unit.trim() {
        "" | "ms" => value / 1e3,
        "s" | "sec" => value,
        "us" | "µs" => value / 1e6,
        "ns" => value / 1e9,
        "m" | "min" => value * 60.0,
        u => {
            return Err(ParseError::UnknownUnit {
                input: input.to_string(),
                unit: u.to_string(),
                known: "ns, us, ms, s, min",
            });
        }
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err(ParseError::TooLarge {
            input: input.to_string(),
        });
    }
    let d = Duration::from_secs_f64(secs);
    if d.is_zero() {
        return Err(ParseError::Zero {
            input: input.to_string(),
        });
    }
    Ok(d)
}

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
    fn parses_bandwidths() {
        let bits = |s: &str| Bandwidth::parse(s).unwrap().bits_per_sec();
        assert_eq!(bits("1Gbit"), 1_000_000_000);
        assert_eq!(bits("100Mbit"), 100_000_000);
        assert_eq!(bits("100 mbit/s"), 100_000_000);
        assert_eq!(bits("1Gbps"), 1_000_000_000);
        assert_eq!(bits("500MB"), 4_000_000_000);
        assert_eq!(bits("500MB/s"), 4_000_000_000);
        assert_eq!(bits("1MiB"), 8 * 1024 * 1024);
        assert_eq!(
            bits("2.5GiB/s"),
            (2.5 * 8.0 * 1024.0 * 1024.0 * 1024.0) as u64
        );
        assert_eq!(bits("1000"), 1000);
        assert_eq!(bits("1e9bit"), 1_000_000_000);
        assert_eq!(bits("12B"), 96);
    }

    #[test]
    fn rejects_bad_bandwidths() {
        assert!(matches!(
            Bandwidth::parse("100mb"),
            Err(ParseError::AmbiguousUnit { .. })
        ));
        let e = Bandwidth::parse("100Mb").unwrap_err().to_string();
        assert!(e.contains("Mbit") && e.contains("MB"), "{e}");
        assert!(matches!(
            Bandwidth::parse("fast"),
            Err(ParseError::NoNumber { .. })
        ));
        assert!(matches!(
            Bandwidth::parse("10 furlongs"),
            Err(ParseError::UnknownUnit { .. })
        ));
        assert!(matches!(
            Bandwidth::parse("0Mbit"),
            Err(ParseError::Zero { .. })
        ));
        assert!(matches!(
            Bandwidth::parse(""),
            Err(ParseError::Empty { .. })
        ));
        assert!(matches!(
            Bandwidth::parse("-5Mbit"),
            Err(ParseError::NoNumber { .. })
        ));
        assert!(matches!(
            Bandwidth::parse("1e30TB"),
            Err(ParseError::TooLarge { .. })
        ));
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("500us").unwrap(), Duration::from_micros(500));
        assert!(matches!(
            parse_duration("3 fortnights"),
            Err(ParseError::UnknownUnit { .. })
        ));
        assert!(matches!(parse_duration("0s"), Err(ParseError::Zero { .. })));
    }

    #[test]
    fn display_is_readable() {
        assert_eq!(
            Bandwidth::parse("1Gbit").unwrap().to_string(),
            "1.00 Gbit/s"
        );
        assert_eq!(
            Bandwidth::parse("100Mbit").unwrap().to_string(),
            "100.00 Mbit/s"
        );
    }

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
