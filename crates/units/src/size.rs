//! Sizes of memory and files: binary prefixes, as QEMU's `-m 1G`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;

/// A size in bytes, parsed from `512M`, `1.5G`, `1GiB` or `4096B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

const SIZE_UNITS: &str = "B, K, KiB, M, MiB, G, GiB, T, TiB (binary: 1K = 1024 B)";
const SIZE_EXAMPLE: &str = "512M, 1.5G, 1GiB or 4096B";

impl ByteSize {
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Parses a size; the unit is required and binary (`K` = `KiB` = 1024 B).
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ParseError::Empty { what: "size" });
        }
        let (_, unit) = split_number(s).ok_or_else(|| ParseError::NoNumber {
            input: input.to_string(),
            example: SIZE_EXAMPLE,
        })?;
        let unit = unit.trim();
        match unit.to_ascii_lowercase().as_str() {
            "" => {
                return Err(ParseError::NoUnit {
                    input: input.to_string(),
                    what: "size",
                    example: SIZE_EXAMPLE,
                });
            }
            "b" | "k" | "kib" | "m" | "mib" | "g" | "gib" | "t" | "tib" => {}
            "kb" | "mb" | "gb" | "tb" => {
                let p = unit[..1].to_ascii_uppercase();
                return Err(ParseError::AmbiguousUnit {
                    input: input.to_string(),
                    unit: unit.to_string(),
                    hint: format!("sizes are binary, write '{p}' or '{p}iB'"),
                });
            }
            _ => {
                return Err(ParseError::UnknownUnit {
                    input: input.to_string(),
                    unit: unit.to_string(),
                    known: SIZE_UNITS,
                });
            }
        }
        let bytes = parse_size::Config::new()
            .with_binary()
            .parse_size(s)
            .map_err(|e| match e {
                parse_size::Error::PosOverflow => ParseError::TooLarge {
                    input: input.to_string(),
                },
                _ => ParseError::NoNumber {
                    input: input.to_string(),
                    example: SIZE_EXAMPLE,
                },
            })?;
        if bytes == 0 {
            return Err(ParseError::Zero {
                input: input.to_string(),
            });
        }
        Ok(ByteSize(bytes))
    }
}

impl FromStr for ByteSize {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        ByteSize::parse(s)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_bytes(self.0))
    }
}

/// Bytes with a binary unit, for people: `512 B`, `1.50 KiB`, `100.0 MiB`,
/// `1 GiB` (whole units are printed without decimals).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >= 1u64 << (10 * (unit + 2)) {
        unit += 1;
    }
    let scale = 1u64 << (10 * (unit + 1));
    if bytes.is_multiple_of(scale) {
        return format!("{} {}", bytes / scale, UNITS[unit]);
    }
    let v = bytes as f64 / scale as f64;
    let p = if v < 10.0 { 2 } else { 1 };
    format!("{v:.p$} {}", UNITS[unit])
}

/// Splits "12.5Mbit" into (12.5, "Mbit"); `None` if there is no
/// non-negative number first.
pub(crate) fn split_number(s: &str) -> Option<(f64, &str)> {
    let end = s
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_digit()
                || c == '.'
                || ((c == 'e' || c == 'E')
                    && i > 0
                    && s[i + 1..].starts_with(|d: char| d.is_ascii_digit())))
        })
        .map_or(s.len(), |(i, _)| i);
    let value: f64 = s[..end].parse().ok()?;
    (value >= 0.0 && value.is_finite()).then_some((value, &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(s: &str) -> u64 {
        ByteSize::parse(s).unwrap().bytes()
    }

    #[test]
    fn parses_binary_sizes() {
        assert_eq!(size("512M"), 512 << 20);
        assert_eq!(size("1G"), 1 << 30);
        assert_eq!(size("1g"), 1 << 30);
        assert_eq!(size("1GiB"), 1 << 30);
        assert_eq!(size("1.5G"), 3 << 29);
        assert_eq!(size("1.5 GiB"), 3 << 29);
        assert_eq!(size("4096B"), 4096);
        assert_eq!(size("16K"), 16 << 10);
        assert_eq!(size("2T"), 2 << 40);
    }

    #[test]
    fn refuses_bad_sizes() {
        let err = |s: &str| ByteSize::parse(s).unwrap_err();
        assert!(matches!(err("4096"), ParseError::NoUnit { .. }));
        assert!(matches!(err("1GB"), ParseError::AmbiguousUnit { .. }));
        assert!(err("1GB").to_string().contains("GiB"));
        assert!(matches!(err("0M"), ParseError::Zero { .. }));
        assert!(matches!(err("12Q"), ParseError::UnknownUnit { .. }));
        assert!(matches!(err("lots"), ParseError::NoNumber { .. }));
        assert!(matches!(err("-1G"), ParseError::NoNumber { .. }));
        assert!(matches!(err(""), ParseError::Empty { .. }));
        assert!(matches!(err("99999999999T"), ParseError::TooLarge { .. }));
    }

    #[test]
    fn formats_bytes() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(3 << 30), "3 GiB");
        assert_eq!(format_bytes(100 << 20), "100 MiB");
        assert_eq!(format_bytes((100 << 20) + 1), "100.0 MiB");
        assert_eq!(format_bytes(1 << 20), "1 MiB");
        assert_eq!(ByteSize(3 << 29).to_string(), "1.50 GiB");
    }
}
