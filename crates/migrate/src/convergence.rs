//! Bounds on pre-copy and what the engine does when one is reached.
//!
//! Every strategy but stop-and-copy iterates until its own criterion says
//! the rest fits the downtime target; [`Limits`] bound that search (rounds,
//! time since the migration started). A strategy brings its own limits
//! ([`Strategy::limits`](crate::Strategy::limits)); an operator's limits
//! replace them one by one. When pre-copy reaches the limit in force before
//! the strategy's criterion is met, [`OnTimeout`] says what happens.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::source::MAX_ROUNDS;

/// Bounds on pre-copy; `None` = no bound of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Pre-copy rounds after which the limit is reached (the next round is
    /// the switchover, or the migration aborts).
    pub max_rounds: Option<u32>,
    /// Time since the migration started after which the limit is reached;
    /// checked between page batches, so a long round is cut short.
    pub max_time: Option<Duration>,
}

impl Limits {
    /// `self`'s bounds where set, `fallback`'s elsewhere.
    pub fn or(self, fallback: Limits) -> Limits {
        Limits {
            max_rounds: self.max_rounds.or(fallback.max_rounds),
            max_time: self.max_time.or(fallback.max_time),
        }
    }

    /// The bound reached before round `round`, `elapsed` after the start.
    pub fn reached(&self, round: u32, elapsed: Duration) -> Option<LimitReached> {
        if self.max_rounds.is_some_and(|m| round > m) {
            return Some(LimitReached::MaxRounds);
        }
        self.time_reached(elapsed)
    }

    /// The time bound, if `elapsed` has reached it.
    pub fn time_reached(&self, elapsed: Duration) -> Option<LimitReached> {
        self.max_time
            .is_some_and(|t| elapsed >= t)
            .then_some(LimitReached::Timeout)
    }

    /// Refuses bounds that cannot be met: no round at all, more rounds than
    /// the engine's guard ([`MAX_ROUNDS`]), no time at all.
    pub fn check(&self) -> Result<(), LimitError> {
        match (self.max_rounds, self.max_time) {
            (Some(n), _) if n == 0 || n > MAX_ROUNDS => Err(LimitError::Rounds(n)),
            (_, Some(t)) if t.is_zero() => Err(LimitError::ZeroTime),
            _ => Ok(()),
        }
    }
}

/// Limits that cannot be met.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LimitError {
    #[error(
        "max rounds must be between 1 and {MAX_ROUNDS}, not {0} (for no pre-copy round, use the stop-and-copy strategy)"
    )]
    Rounds(u32),
    #[error("the timeout must be greater than zero")]
    ZeroTime,
}

/// Which bound ended pre-copy before the strategy's criterion was met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitReached {
    /// The round limit.
    MaxRounds,
    /// The time limit.
    Timeout,
}

impl fmt::Display for LimitReached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitReached::MaxRounds => "round limit",
            LimitReached::Timeout => "time limit",
        })
    }
}

/// What the engine does when pre-copy reaches its limit.
///
/// Later strategies add their own answers here (`auto-converge`: throttle
/// the vCPUs until the rest fits); [`PLANNED_ON_TIMEOUT`] names them so
/// that they are refused as not available yet rather than as unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnTimeout {
    /// Roll back: the VM keeps running on the source and the migration
    /// fails with [`MigrateError::NotConverged`](crate::MigrateError::NotConverged).
    Abort,
    /// Switch over now the strategy's way: pause the VM and send what is
    /// left, whatever the downtime (post-copy for `hybrid` and `postcopy`).
    #[default]
    Force,
    /// Switch to post-copy now: the VM runs on the destination and the rest
    /// follows on demand (needs a destination that can; checked at Setup).
    Postcopy,
    /// Keep pre-copy going with the vCPUs throttled by QEMU's auto-converge
    /// steps (20 % at the limit, +10 % each further round, 99 % at most);
    /// once at 99 % and still not converged, switch over as `Force` does.
    AutoConverge,
}

impl OnTimeout {
    /// Every action available, in the order help texts list them.
    pub const ALL: [OnTimeout; 4] = [
        OnTimeout::Abort,
        OnTimeout::Force,
        OnTimeout::Postcopy,
        OnTimeout::AutoConverge,
    ];

    /// The name users give on the command line and in API requests.
    pub const fn name(self) -> &'static str {
        match self {
            OnTimeout::Abort => "abort",
            OnTimeout::Force => "force",
            OnTimeout::Postcopy => "postcopy",
            OnTimeout::AutoConverge => "auto-converge",
        }
    }
}

impl fmt::Display for OnTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OnTimeout {
    type Err = OnTimeoutError;

    fn from_str(name: &str) -> Result<Self, OnTimeoutError> {
        if let Some(kind) = OnTimeout::ALL.into_iter().find(|k| k.name() == name) {
            return Ok(kind);
        }
        Err(OnTimeoutError::Unknown(name.to_string()))
    }
}

impl Serialize for OnTimeout {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for OnTimeout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

fn available() -> String {
    OnTimeout::ALL.map(OnTimeout::name).join(", ")
}

/// An on-timeout action that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OnTimeoutError {
    #[error("unknown on-timeout action '{0}' (available: {avail})", avail = available())]
    Unknown(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_others_are_refused() {
        for k in OnTimeout::ALL {
            assert_eq!(k.name().parse::<OnTimeout>(), Ok(k));
        }
        let e = "shrug".parse::<OnTimeout>().unwrap_err().to_string();
        assert!(
            e.contains("unknown") && e.contains("abort, force, postcopy, auto-converge"),
            "{e}"
        );
        assert_eq!(OnTimeout::default(), OnTimeout::Force);
    }

    #[test]
    fn operator_limits_replace_the_strategys_one_by_one() {
        let strategy = Limits {
            max_rounds: Some(30),
            max_time: Some(Duration::from_secs(60)),
        };
        let op = Limits {
            max_rounds: Some(5),
            max_time: None,
        };
        let l = op.or(strategy);
        assert_eq!(l.max_rounds, Some(5));
        assert_eq!(l.max_time, Some(Duration::from_secs(60)));
        assert_eq!(l.reached(5, Duration::ZERO), None);
        assert_eq!(l.reached(6, Duration::ZERO), Some(LimitReached::MaxRounds));
        assert_eq!(
            l.reached(2, Duration::from_secs(60)),
            Some(LimitReached::Timeout)
        );
    }

    #[test]
    fn impossible_limits_are_refused() {
        let rounds = |n| Limits {
            max_rounds: Some(n),
            max_time: None,
        };
        assert!(rounds(0).check().is_err());
        assert!(rounds(MAX_ROUNDS + 1).check().is_err());
        assert!(rounds(MAX_ROUNDS).check().is_ok());
        let zero = Limits {
            max_rounds: None,
            max_time: Some(Duration::ZERO),
        };
        assert_eq!(zero.check(), Err(LimitError::ZeroTime));
    }
}
