//! Rates: bits or bytes per second, with the unit spelled out.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;
use crate::size::split_number;

/// A rate in bits per second (always > 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bandwidth(u64);

const RATE_UNITS: &str = "bit, Kbit, Mbit, Gbit, Tbit, bps, Kbps, Mbps, Gbps (bits/s, decimal); B, KB, MB, GB, TB (bytes/s, decimal); KiB, MiB, GiB, TiB (bytes/s, binary); an optional '/s'";
const RATE_EXAMPLE: &str = "1Gbit, 100Mbit or 500MB/s";

/// What a rate unit counts.
struct RateUnit {
    /// Prefix letter (`K`, `M`, `G`, `T`) or none.
    prefix: Option<char>,
    binary: bool,
    bytes: bool,
}

impl Bandwidth {
    /// `bits` per second; `None` if zero.
    pub fn from_bits_per_sec(bits: u64) -> Option<Self> {
        (bits > 0).then_some(Bandwidth(bits))
    }

    /// `bytes` per second; `None` if zero.
    pub fn from_bytes_per_sec(bytes: u64) -> Option<Self> {
        Self::from_bits_per_sec(bytes.saturating_mul(8))
    }

    /// Bits per second.
    pub fn bits_per_sec(self) -> u64 {
        self.0
    }

    /// Bytes per second (rounded down, at least 1).
    pub fn bytes_per_sec(self) -> u64 {
        (self.0 / 8).max(1)
    }

    /// Parses "1Gbit", "100 Mbit/s", "1Gbps", "500MB/s", "2GiB/s".
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ParseError::Empty { what: "rate" });
        }
        let (_, unit_text) = split_number(s).ok_or_else(|| ParseError::NoNumber {
            input: input.to_string(),
            example: RATE_EXAMPLE,
        })?;
        let number = s[..s.len() - unit_text.len()].trim();
        let unit = unit_text.trim();
        let unit = unit.strip_suffix("/s").unwrap_or(unit).trim();
        let unit = classify(input, unit)?;
        let mut text = number.to_string();
        if let Some(p) = unit.prefix {
            text.push(p);
        }
        let config = parse_size::Config::new().with_byte_suffix(parse_size::ByteSuffix::Deny);
        let config = if unit.binary {
            config.with_binary()
        } else {
            config.with_decimal()
        };
        let too_large = || ParseError::TooLarge {
            input: input.to_string(),
        };
        let count = config.parse_size(&text).map_err(|e| match e {
            parse_size::Error::PosOverflow => too_large(),
            _ => ParseError::NoNumber {
                input: input.to_string(),
                example: RATE_EXAMPLE,
            },
        })?;
        let bits = if unit.bytes {
            count.checked_mul(8).ok_or_else(too_large)?
        } else {
            count
        };
        Bandwidth::from_bits_per_sec(bits).ok_or_else(|| ParseError::Zero {
            input: input.to_string(),
        })
    }
}

/// Reads a rate unit (without `/s`).
fn classify(input: &str, unit: &str) -> Result<RateUnit, ParseError> {
    if unit.is_empty() {
        return Err(ParseError::NoUnit {
            input: input.to_string(),
            what: "rate",
            example: RATE_EXAMPLE,
        });
    }
    let prefix_of = |p: &str| -> Option<Option<char>> {
        match p.to_ascii_uppercase().as_str() {
            "" => Some(None),
            "K" => Some(Some('K')),
            "M" => Some(Some('M')),
            "G" => Some(Some('G')),
            "T" => Some(Some('T')),
            _ => None,
        }
    };
    let lower = unit.to_ascii_lowercase();
    // Bits: "bit" and "bps", any case, decimal prefixes; "Kibit" binary.
    if let Some(p) = lower
        .strip_suffix("bit")
        .or_else(|| lower.strip_suffix("bps"))
    {
        if let Some(p) = p.strip_suffix('i')
            && let Some(Some(prefix)) = prefix_of(p)
        {
            return Ok(RateUnit {
                prefix: Some(prefix),
                binary: true,
                bytes: false,
            });
        }
        if let Some(prefix) = prefix_of(p) {
            return Ok(RateUnit {
                prefix,
                binary: false,
                bytes: false,
            });
        }
    }
    // Bytes: a capital "B"; "KiB" binary, "KB" decimal.
    if let Some(p) = unit.strip_suffix("iB")
        && let Some(Some(prefix)) = prefix_of(p)
    {
        return Ok(RateUnit {
            prefix: Some(prefix),
            binary: true,
            bytes: true,
        });
    }
    if let Some(p) = unit.strip_suffix('B')
        && let Some(prefix) = prefix_of(p)
    {
        return Ok(RateUnit {
            prefix,
            binary: false,
            bytes: true,
        });
    }
    // "Mb", "mb", "b": bits or bytes?
    if let Some(p) = lower.strip_suffix('b')
        && let Some(prefix) = prefix_of(p)
    {
        let p: String = prefix.map(String::from).unwrap_or_default();
        return Err(ParseError::AmbiguousUnit {
            input: input.to_string(),
            unit: unit.to_string(),
            hint: format!("write '{p}bit' for bits or '{p}B' for bytes per second"),
        });
    }
    Err(ParseError::UnknownUnit {
        input: input.to_string(),
        unit: unit.to_string(),
        known: RATE_UNITS,
    })
}

impl FromStr for Bandwidth {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Bandwidth::parse(s)
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_bits_per_sec(self.0 as f64))
    }
}

/// A measured rate with a decimal prefix: "1.00 Gbit/s", "100.00 Mbit/s".
pub fn format_bits_per_sec(bits: f64) -> String {
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
    format!("{v:.2} {p}bit/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(s: &str) -> u64 {
        Bandwidth::parse(s).unwrap().bits_per_sec()
    }

    #[test]
    fn parses_rates() {
        assert_eq!(bits("1Gbit"), 1_000_000_000);
        assert_eq!(bits("100Mbit"), 100_000_000);
        assert_eq!(bits("100 mbit/s"), 100_000_000);
        assert_eq!(bits("1Gbps"), 1_000_000_000);
        assert_eq!(bits("1.5Gbit"), 1_500_000_000);
        assert_eq!(bits("500MB"), 4_000_000_000);
        assert_eq!(bits("500MB/s"), 4_000_000_000);
        assert_eq!(bits("1MiB"), 8 * 1024 * 1024);
        assert_eq!(
            bits("2.5GiB/s"),
            (2.5 * 8.0 * 1024.0 * 1024.0 * 1024.0) as u64
        );
        assert_eq!(bits("1000bit"), 1000);
        assert_eq!(bits("12B"), 96);
        assert_eq!(bits("1Mibit"), 1 << 20);
    }

    #[test]
    fn refuses_bad_rates() {
        let err = |s: &str| Bandwidth::parse(s).unwrap_err();
        assert!(matches!(err("100mb"), ParseError::AmbiguousUnit { .. }));
        let e = err("100Mb").to_string();
        assert!(e.contains("Mbit") && e.contains("MB"), "{e}");
        assert!(matches!(err("1000"), ParseError::NoUnit { .. }));
        assert!(matches!(err("fast"), ParseError::NoNumber { .. }));
        assert!(matches!(err("10 furlongs"), ParseError::UnknownUnit { .. }));
        assert!(matches!(err("0Mbit"), ParseError::Zero { .. }));
        assert!(matches!(err(""), ParseError::Empty { .. }));
        assert!(matches!(err("-5Mbit"), ParseError::NoNumber { .. }));
        assert!(matches!(err("1e30TB"), ParseError::TooLarge { .. }));
    }

    #[test]
    fn displays_readably() {
        assert_eq!(
            Bandwidth::parse("1Gbit").unwrap().to_string(),
            "1.00 Gbit/s"
        );
        assert_eq!(
            Bandwidth::parse("100Mbit").unwrap().to_string(),
            "100.00 Mbit/s"
        );
    }
}
