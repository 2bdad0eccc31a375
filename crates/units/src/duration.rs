//! Durations: a number and a unit, as systemd and humantime write them.

use std::time::Duration;

use crate::error::ParseError;
use crate::size::split_number;

const DURATION_EXAMPLE: &str = "300ms, 1.5s or 2min";

/// Parses "300ms", "1.5s", "500us", "2min", "1h 30min"; the unit is
/// required and the result must be greater than zero.
pub fn parse_duration(input: &str) -> Result<Duration, ParseError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(ParseError::Empty { what: "duration" });
    }
    match split_number(s) {
        None => {
            return Err(ParseError::NoNumber {
                input: input.to_string(),
                example: DURATION_EXAMPLE,
            });
        }
        Some((_, unit)) if unit.trim().is_empty() => {
            return Err(ParseError::NoUnit {
                input: input.to_string(),
                what: "duration",
                example: DURATION_EXAMPLE,
            });
        }
        Some(_) => {}
    }
    let d = humantime::parse_duration(s).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => ParseError::TooLarge {
            input: input.to_string(),
        },
        humantime::DurationError::UnknownUnit { unit, .. } => ParseError::UnknownUnit {
            input: input.to_string(),
            unit,
            known: "ns, us, ms, s, min, h",
        },
        _ => ParseError::NoNumber {
            input: input.to_string(),
            example: DURATION_EXAMPLE,
        },
    })?;
    if d.is_zero() {
        return Err(ParseError::Zero {
            input: input.to_string(),
        });
    }
    Ok(d)
}

/// As [`parse_duration`], but zero ("0", "0s", "0ms") is allowed: for
/// settings where zero means "none" or "at once".
pub fn parse_duration_or_zero(input: &str) -> Result<Duration, ParseError> {
    if matches!(input.trim(), "0" | "0s" | "0ms") {
        return Ok(Duration::ZERO);
    }
    parse_duration(input)
}

/// "300ms", "1.5s", "2min 30s": a duration for people, readable back by
/// [`parse_duration`].
pub fn format_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        let us = d.as_micros();
        if us.is_multiple_of(1000) {
            return format!("{}ms", us / 1000);
        }
        return format!("{}us", us);
    }
    if d < Duration::from_secs(60) {
        let ms = d.as_millis();
        if ms.is_multiple_of(1000) {
            return format!("{}s", ms / 1000);
        }
        let secs = format!("{:.3}", d.as_secs_f64());
        return format!("{}s", secs.trim_end_matches('0'));
    }
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_allowed_only_where_asked() {
        assert_eq!(parse_duration_or_zero("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration_or_zero("20ms"),
            Ok(Duration::from_millis(20))
        );
        assert!(parse_duration_or_zero("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500us").unwrap(), Duration::from_micros(500));
        assert_eq!(parse_duration("2min").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration(" 1h 30min ").unwrap(),
            Duration::from_secs(5400)
        );
    }

    #[test]
    fn refuses_bad_durations() {
        let err = |s: &str| parse_duration(s).unwrap_err();
        assert!(matches!(err("250"), ParseError::NoUnit { .. }));
        assert!(matches!(
            err("3 fortnights"),
            ParseError::UnknownUnit { .. }
        ));
        assert!(matches!(err("0s"), ParseError::Zero { .. }));
        assert!(matches!(err("soon"), ParseError::NoNumber { .. }));
        assert!(matches!(err(""), ParseError::Empty { .. }));
    }

    #[test]
    fn formats_durations() {
        for (d, s) in [
            (Duration::from_millis(300), "300ms"),
            (Duration::from_micros(250), "250us"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_secs(150), "2m 30s"),
        ] {
            assert_eq!(format_duration(d), s);
            assert_eq!(parse_duration(s).unwrap(), d);
        }
    }
}
