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
    /// Choose each interval from the pool's load, with hysteresis.
    Auto {
        /// Consolidate when the pool's load is below this...
        consolidate_below: f64,
        /// ...balance when hotspots exist and the load is at least this...
        balance_above: f64,
        /// ...for this many consecutive intervals before switching.
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

/// The current mode and the hysteresis counter of the `Auto` pattern.
#[derive(Debug, Clone)]
pub(crate) struct ModeSwitch {
    mode: Mode,
    /// Consecutive intervals that asked for the other mode.
    streak: u32,
}

impl ModeSwitch {
    /// Balance for `Balance`; consolidate otherwise (`Auto` starts there).
    pub fn new(pattern: &Pattern) -> Self {
        let mode = match pattern {
            Pattern::Balance => Mode::Balance,
            _ => Mode::Consolidate,
        };
        Self { mode, streak: 0 }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Applies the pattern's rule to this interval's view and returns the
    /// mode to plan in. Fixed patterns never change mode.
    pub fn update(&mut self, pattern: &Pattern, view: &PoolView, has_hotspots: bool) -> Mode {
        let Pattern::Auto {
            consolidate_below,
            balance_above,
            dwell,
        } = *pattern
        else {
            return self.mode;
        };
        let load = pool_load(view);
        let wants_other = match self.mode {
            Mode::Consolidate => has_hotspots && load >= balance_above,
            Mode::Balance => load < consolidate_below,
        };
        if wants_other {
            self.streak += 1;
            if self.streak >= dwell.max(1) {
                self.mode = match self.mode {
                    Mode::Consolidate => Mode::Balance,
                    Mode::Balance => Mode::Consolidate,
                };
                self.streak = 0;
            }
        } else {
            self.streak = 0;
        }
        self.mode
    }
}

/// All VMs' CPU demand over the capacity of the powered-on hosts
/// (infinite when no host is on).
fn pool_load(view: &PoolView) -> f64 {
    let (mut demand, mut cap) = (0.0, 0.0);
    for h in view.hosts.iter().filter(|h| h.on) {
        cap += h.cpu_capacity;
    }
    for v in &view.vms {
        demand += v.cpu_demand;
    }
    if cap > 0.0 {
        demand / cap
    } else {
        f64::INFINITY
    }
}
