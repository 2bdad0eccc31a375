//! Strategy names: the one place where a name given by a user (flag, API
//! request, benchmark matrix) becomes a strategy.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use super::params::{ParamReader, StrategyError, StrategyParams};
use super::{
    AutoConverge, AutoConvergeParams, Delayed, DelayedParams, DowntimeParams, DowntimeTarget,
    Hybrid, HybridParams, Postcopy, Predictive, PredictiveParams, StopAndCopy, Strategy, Xen,
    XenParams,
};

/// The strategies Ferry provides, by name.
///
/// Parse one with [`str::parse`], build it with [`StrategyKind::build_with`]
/// and its parameters by name ([`StrategyParams`], `--strategy-param
/// KEY=VALUE`), or with [`StrategyKind::build`] and the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StrategyKind {
    /// [`StopAndCopy`]: the non-live baseline.
    StopAndCopy,
    /// [`Xen`]: Clark et al.'s rate-limited pre-copy.
    Xen,
    /// [`DowntimeTarget`]: QEMU's downtime rule.
    Downtime,
    /// [`Predictive`]: seed 000's dirty-page prediction and adaptive bandwidth.
    Predictive,
    /// [`Delayed`]: seed 003's delayed copy by temporal locality.
    Delayed,
    /// [`AutoConverge`]: QEMU's downtime rule with vCPU throttling.
    AutoConverge,
    /// [`Postcopy`]: switch at once, pages follow on demand.
    Postcopy,
    /// [`Hybrid`]: pre-copy rounds, then post-copy.
    Hybrid,
}

impl StrategyKind {
    /// Every strategy, in the order help texts and benchmarks list them.
    pub const ALL: [StrategyKind; 8] = [
        StrategyKind::StopAndCopy,
        StrategyKind::Xen,
        StrategyKind::Downtime,
        StrategyKind::Predictive,
        StrategyKind::Delayed,
        StrategyKind::AutoConverge,
        StrategyKind::Postcopy,
        StrategyKind::Hybrid,
    ];

    /// The default strategy (chosen on the benchmark, docs/BENCHMARKS.md).
    pub const DEFAULT: StrategyKind = StrategyKind::Predictive;

    /// The name users give on the command line and in API requests.
    pub const fn name(self) -> &'static str {
        match self {
            StrategyKind::StopAndCopy => "stop-and-copy",
            StrategyKind::Xen => "xen",
            StrategyKind::Downtime => "downtime",
            StrategyKind::Predictive => "predictive",
            StrategyKind::Delayed => "delayed",
            StrategyKind::AutoConverge => "auto-converge",
            StrategyKind::Postcopy => "postcopy",
            StrategyKind::Hybrid => "hybrid",
        }
    }

    /// The strategy, with default parameters.
    pub fn build(self) -> Box<dyn Strategy> {
        self.build_with(&StrategyParams::new())
            .expect("the default parameters are valid")
    }

    /// The strategy with `params` (unknown keys and values out of range are
    /// refused, one error line each; absent keys take their defaults).
    pub fn build_with(self, params: &StrategyParams) -> Result<Box<dyn Strategy>, StrategyError> {
        let mut reader = ParamReader::new(self, params);
        let r = &mut reader;
        let s: Box<dyn Strategy> = match self {
            StrategyKind::StopAndCopy => Box::new(StopAndCopy),
            StrategyKind::Xen => Box::new(Xen {
                params: XenParams::read(r)?,
            }),
            StrategyKind::Downtime => Box::new(DowntimeTarget {
                params: DowntimeParams::read(r)?,
            }),
            StrategyKind::Predictive => Box::new(Predictive::new(PredictiveParams::read(r)?)),
            StrategyKind::Delayed => Box::new(Delayed::new(DelayedParams::read(r)?)),
            StrategyKind::AutoConverge => Box::new(AutoConverge::new(AutoConvergeParams::read(r)?)),
            StrategyKind::Postcopy => Box::new(Postcopy),
            StrategyKind::Hybrid => {
                // Hybrid's own keys; the rest are its pre-copy strategy's.
                let params = HybridParams::read(r)?;
                let precopy = params.precopy.build_with(&reader.rest())?;
                return Ok(Box::new(Hybrid::with_precopy(params, precopy)));
            }
        };
        reader.finish()?;
        Ok(s)
    }

    /// Whether the strategy ends in post-copy (needs a destination that can).
    pub fn is_postcopy(self) -> bool {
        matches!(self, StrategyKind::Postcopy | StrategyKind::Hybrid)
    }
}

/// Name of the default strategy, for flag defaults.
pub const DEFAULT_STRATEGY: &str = StrategyKind::DEFAULT.name();

/// Every strategy name, in [`StrategyKind::ALL`] order.
pub const STRATEGIES: &[&str] = &{
    let mut names = [""; StrategyKind::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = StrategyKind::ALL[i].name();
        i += 1;
    }
    names
};

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StrategyKind {
    type Err = UnknownStrategy;

    fn from_str(name: &str) -> Result<Self, UnknownStrategy> {
        StrategyKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| UnknownStrategy(name.to_string()))
    }
}

/// A strategy name that is not one of [`STRATEGIES`].
#[derive(Debug, Error, PartialEq, Eq)]
#[error("unknown strategy '{0}' (known: {known})", known = STRATEGIES.join(", "))]
pub struct UnknownStrategy(pub String);
