//! Strategy parameters given by name (`--strategy-param KEY=VALUE`, the API
//! request's `strategy_params`): parsed here once, checked by the strategy
//! that reads them, every mistake one error line.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use thiserror::Error;
use units::Bandwidth;

use super::kind::{StrategyKind, UnknownStrategy};

/// `KEY=VALUE` pairs for one strategy, in the order given. A key may appear
/// once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StrategyParams {
    pairs: Vec<(String, String)>,
}

impl StrategyParams {
    /// No parameters: every strategy's defaults.
    pub fn new() -> Self {
        StrategyParams::default()
    }

    /// Parses `KEY=VALUE` texts (as given on the command line).
    pub fn parse<I, S>(texts: I) -> Result<Self, StrategyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut p = StrategyParams::new();
        for t in texts {
            let t = t.as_ref();
            let (k, v) = t
                .split_once('=')
                .ok_or_else(|| StrategyError::NotKeyValue(t.to_string()))?;
            p.insert(k, v)?;
        }
        Ok(p)
    }

    /// Parameters from a map (the API request's `strategy_params`).
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Self, StrategyError> {
        let mut p = StrategyParams::new();
        for (k, v) in map {
            p.insert(k, v)?;
        }
        Ok(p)
    }

    /// Adds `key` = `value`; a key given twice is an error.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), StrategyError> {
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(StrategyError::NotKeyValue(format!("={value}")));
        }
        if self.get(key).is_some() {
            return Err(StrategyError::Duplicate(key.to_string()));
        }
        self.pairs.push((key.to_string(), value.to_string()));
        Ok(())
    }

    /// The value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The pairs as a map (for the API request).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.pairs.iter().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The pairs, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// A strategy name or parameter that cannot be used; `Display` is one line.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StrategyError {
    #[error(transparent)]
    Unknown(#[from] UnknownStrategy),
    #[error("strategy parameter '{0}' is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("strategy parameter '{0}' is given twice")]
    Duplicate(String),
    #[error("strategy {strategy} has no parameter '{key}' ({known})")]
    UnknownKey {
        strategy: StrategyKind,
        key: String,
        known: Known,
    },
    #[error("strategy {strategy}: {key}={value}: {why}")]
    BadValue {
        strategy: StrategyKind,
        key: String,
        value: String,
        why: String,
    },
}

/// The parameters a strategy knows, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known(pub Vec<&'static str>);

impl fmt::Display for Known {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("it takes none")
        } else {
            write!(f, "known: {}", self.0.join(", "))
        }
    }
}

/// An interval a number must lie in, printed as `(0, 1)`, `[1, 99]`, `[0, inf)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Range {
    pub lo: f64,
    pub hi: f64,
    pub lo_open: bool,
    pub hi_open: bool,
}

impl Range {
    /// `(lo, hi)`.
    pub const fn open(lo: f64, hi: f64) -> Range {
        Range {
            lo,
            hi,
            lo_open: true,
            hi_open: true,
        }
    }
    /// `[lo, hi]`.
    pub const fn closed(lo: f64, hi: f64) -> Range {
        Range {
            lo,
            hi,
            lo_open: false,
            hi_open: false,
        }
    }
    /// `[lo, inf)` or `(lo, inf)`.
    pub const fn above(lo: f64, open: bool) -> Range {
        Range {
            lo,
            hi: f64::INFINITY,
            lo_open: open,
            hi_open: true,
        }
    }

    fn contains(&self, x: f64) -> bool {
        let lo_ok = if self.lo_open {
            x > self.lo
        } else {
            x >= self.lo
        };
        let hi_ok = if self.hi_open {
            x < self.hi
        } else {
            x <= self.hi
        };
        lo_ok && hi_ok
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hi = if self.hi.is_infinite() {
            "inf".to_string()
        } else {
            self.hi.to_string()
        };
        write!(
            f,
            "{}{}, {}{}",
            if self.lo_open { '(' } else { '[' },
            self.lo,
            hi,
            if self.hi_open { ')' } else { ']' }
        )
    }
}

/// Reads one strategy's parameters, typed and range-checked; [`finish`]
/// refuses keys the strategy did not ask for.
///
/// [`finish`]: ParamReader::finish
pub(crate) struct ParamReader<'a> {
    strategy: StrategyKind,
    params: &'a StrategyParams,
    known: Vec<&'static str>,
}

impl<'a> ParamReader<'a> {
    pub fn new(strategy: StrategyKind, params: &'a StrategyParams) -> Self {
        ParamReader {
            strategy,
            params,
            known: Vec::new(),
        }
    }

    /// The error for `key`'s `value`.
    pub fn bad(&self, key: &str, value: &str, why: impl fmt::Display) -> StrategyError {
        StrategyError::BadValue {
            strategy: self.strategy,
            key: key.to_string(),
            value: value.to_string(),
            why: why.to_string(),
        }
    }

    fn take(&mut self, key: &'static str) -> Option<&'a str> {
        self.known.push(key);
        self.params.get(key)
    }

    /// A number in `range` (a trailing `%` is allowed).
    pub fn number(
        &mut self,
        key: &'static str,
        default: f64,
        range: Range,
    ) -> Result<f64, StrategyError> {
        let Some(v) = self.take(key) else {
            return Ok(default);
        };
        let x: f64 = v
            .strip_suffix('%')
            .unwrap_or(v)
            .trim()
            .parse()
            .map_err(|_| self.bad(key, v, "not a number"))?;
        if !x.is_finite() || !range.contains(x) {
            return Err(self.bad(key, v, format_args!("must be in {range}")));
        }
        Ok(x)
    }

    /// A whole number in `range` (a trailing `%` is allowed).
    pub fn count(
        &mut self,
        key: &'static str,
        default: u32,
        range: Range,
    ) -> Result<u32, StrategyError> {
        let Some(v) = self.take(key) else {
            return Ok(default);
        };
        let x: u32 = v
            .strip_suffix('%')
            .unwrap_or(v)
            .trim()
            .parse()
            .map_err(|_| self.bad(key, v, "not a whole number"))?;
        if !range.contains(f64::from(x)) {
            return Err(self.bad(key, v, format_args!("must be in {range}")));
        }
        Ok(x)
    }

    /// A throttle in percent of vCPU time, from 1 to 99 (`50` or `50%`).
    pub fn percent(&mut self, key: &'static str, default: u32) -> Result<u32, StrategyError> {
        let v = self.params.get(key).unwrap_or_default().to_string();
        self.count(key, default, Range::closed(1.0, 99.0))
            .map_err(|_| self.bad(key, &v, "must be a whole percentage from 1 to 99"))
    }

    /// A number in `range`, or `unlimited` (`None`).
    pub fn number_or_unlimited(
        &mut self,
        key: &'static str,
        default: Option<f64>,
        range: Range,
    ) -> Result<Option<f64>, StrategyError> {
        match self.params.get(key) {
            Some("unlimited") => {
                self.known.push(key);
                Ok(None)
            }
            Some(_) => self.number(key, 0.0, range).map(Some),
            None => {
                self.known.push(key);
                Ok(default)
            }
        }
    }

    /// The value of `key` read by `parse`, if given.
    pub fn given<T, E: fmt::Display>(
        &mut self,
        key: &'static str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, StrategyError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => parse(v).map(Some).map_err(|e| self.bad(key, v, e)),
        }
    }

    /// A rate (`units::Bandwidth`: "100Mbit").
    pub fn bandwidth(
        &mut self,
        key: &'static str,
        default: Bandwidth,
    ) -> Result<Bandwidth, StrategyError> {
        Ok(self.given(key, Bandwidth::parse)?.unwrap_or(default))
    }

    /// A duration (`units::parse_duration`: "60s").
    pub fn duration(
        &mut self,
        key: &'static str,
        default: Duration,
    ) -> Result<Duration, StrategyError> {
        Ok(self.given(key, units::parse_duration)?.unwrap_or(default))
    }

    /// A pre-copy strategy's name (not one that ends in post-copy).
    pub fn precopy_strategy(
        &mut self,
        key: &'static str,
        default: StrategyKind,
    ) -> Result<StrategyKind, StrategyError> {
        let Some(v) = self.take(key) else {
            return Ok(default);
        };
        let kind: StrategyKind = v.parse().map_err(|e| self.bad(key, v, e))?;
        if kind.is_postcopy() {
            return Err(self.bad(key, v, "must be a pre-copy strategy"));
        }
        Ok(kind)
    }

    /// The parameters not read so far (for a strategy that wraps another).
    pub fn rest(&self) -> StrategyParams {
        StrategyParams {
            pairs: self
                .params
                .pairs
                .iter()
                .filter(|(k, _)| !self.known.contains(&k.as_str()))
                .cloned()
                .collect(),
        }
    }

    /// Refuses any key the strategy did not read.
    pub fn finish(self) -> Result<(), StrategyError> {
        for (k, _) in self.params.iter() {
            if !self.known.contains(&k) {
                return Err(StrategyError::UnknownKey {
                    strategy: self.strategy,
                    key: k.to_string(),
                    known: Known(self.known),
                });
            }
        }
        Ok(())
    }
}
