//! Pattern recognition: whether the engine balances or consolidates this
//! interval (docs/MANAGER.md, "Pattern recognition").

use crate::model::PoolView;
use crate::names::{self, UnknownName};

/// Which pattern the engine follows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// Always consolidate (Beloglazov & Buyya): relieve hotspots with
    /// power-aware placement, then empty coldspots and switch them off.
    Consolidate,
    /// Always balance: relieve hotspots onto the least-loaded hosts; never
    /// empty hosts.
    Balance,
    /// Choose each interval from the pool's load and its trend, with
    /// hysteresis (docs/MANAGER.md, "Pattern recognition").
    Auto {
        /// Consolidate when the forecast pool load is below this...
        consolidate_below: f64,
        /// ...balance when it is at least this...
        balance_above: f64,
        /// ...for this many consecutive intervals before switching (also
        /// how far ahead, in intervals, the trend is projected).
        dwell: u32,
    },
}

/// A pattern without its parameters, as scenarios and command lines name
/// it: `consolidate`, `balance`, `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    Consolidate,
    Balance,
    Auto,
}

impl PatternKind {
    /// Every kind, in the order names are listed.
    pub const ALL: [PatternKind; 3] = [
        PatternKind::Consolidate,
        PatternKind::Balance,
        PatternKind::Auto,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PatternKind::Consolidate => "consolidate",
            PatternKind::Balance => "balance",
            PatternKind::Auto => "auto",
        }
    }
}

impl PatternKind {
    /// The pattern of this kind; `auto`'s thresholds and dwell are used
    /// only by `auto`.
    pub fn pattern(self, consolidate_below: f64, balance_above: f64, dwell: u32) -> Pattern {
        match self {
            PatternKind::Consolidate => Pattern::Consolidate,
            PatternKind::Balance => Pattern::Balance,
            PatternKind::Auto => Pattern::Auto {
                consolidate_below,
                balance_above,
                dwell,
            },
        }
    }
}

impl std::str::FromStr for PatternKind {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        names::parse("pattern", s, &Self::ALL, Self::name)
    }
}

impl std::fmt::Display for PatternKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Pattern {
    /// Which pattern this is, without its parameters.
    pub fn kind(&self) -> PatternKind {
        match self {
            Pattern::Consolidate => PatternKind::Consolidate,
            Pattern::Balance => PatternKind::Balance,
            Pattern::Auto { .. } => PatternKind::Auto,
        }
    }
}

/// The mode the engine is in for an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Consolidate,
    Balance,
}

/// Pool loads the trend is fitted to (the current one included).
pub const TREND_WINDOW: usize = 6;

/// The current mode, the hysteresis counter and the recent pool loads of
/// the `Auto` pattern.
#[derive(Debug, Clone)]
pub(crate) struct ModeSwitch {
    mode: Mode,
    /// Consecutive intervals that asked for the other mode.
    streak: u32,
    /// Recent pool loads, oldest first (at most `TREND_WINDOW`).
    loads: Vec<f64>,
    /// Mode changes so far.
    switches: u64,
}

impl ModeSwitch {
    /// Balance for `Balance`; consolidate otherwise (`Auto` starts there).
    pub fn new(pattern: &Pattern) -> Self {
        let mode = match pattern {
            Pattern::Balance => Mode::Balance,
            _ => Mode::Consolidate,
        };
        Self {
            mode,
            streak: 0,
            loads: Vec::with_capacity(TREND_WINDOW),
            switches: 0,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Mode changes so far.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// The pool load of the last interval seen (0 before any).
    pub fn load(&self) -> f64 {
        self.loads.last().copied().unwrap_or(0.0)
    }

    /// Applies the pattern's rule to this interval's view and returns the
    /// mode to plan in. Fixed patterns never change mode. `Auto` projects
    /// the pool load `dwell` intervals ahead along its recent trend: at or
    /// above `balance_above` it asks for balance, below `consolidate_below`
    /// for consolidation; a change happens after `dwell` consecutive asks.
    pub fn update(&mut self, pattern: &Pattern, view: &PoolView) -> Mode {
        if self.loads.len() == TREND_WINDOW {
            self.loads.remove(0);
        }
        self.loads.push(pool_load(view));
        let Pattern::Auto {
            consolidate_below,
            balance_above,
            dwell,
        } = *pattern
        else {
            return self.mode;
        };
        let forecast = self.load() + trend(&self.loads) * dwell as f64;
        let wants_other = match self.mode {
            Mode::Consolidate => forecast >= balance_above,
            Mode::Balance => forecast < consolidate_below,
        };
        if wants_other {
            self.streak += 1;
            if self.streak >= dwell.max(1) {
                self.mode = match self.mode {
                    Mode::Consolidate => Mode::Balance,
                    Mode::Balance => Mode::Consolidate,
                };
                self.streak = 0;
                self.switches += 1;
            }
        } else {
            self.streak = 0;
        }
        self.mode
    }
}

/// Least-squares slope of the loads per interval (0 with fewer than two).
fn trend(loads: &[f64]) -> f64 {
    let n = loads.len();
    if n < 2 {
        return 0.0;
    }
    let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let (_, slope) = crate::stats::linear_fit(&x, loads);
    slope
}

/// The pool's load: all VMs' CPU demand over the capacity of every host,
/// on or off. Over the powered-on hosts only, consolidation would hide the
/// pressure it creates (the on hosts stay busy however light the pool is).
pub fn pool_load(view: &PoolView) -> f64 {
    let cap: f64 = view.hosts.iter().map(|h| h.cpu_capacity).sum();
    let demand: f64 = view.vms.iter().map(|v| v.cpu_demand).sum();
    if cap > 0.0 { demand / cap } else { 0.0 }
}
