//! The failure matrix of docs/SAFETY.md ("The matrix by phase and mode"):
//! which failure, at which point, in which mode; and the random trials
//! drawn beside it.

use std::time::Duration;

use migrate::faults::{Action, Dir, Fault, Spot};
use vmstate::record::kind::{PAGES, STATE};
use wire::kind;

/// How the VM moves: the three columns groups of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    PreCopy,
    PostCopy,
    Hybrid,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::PreCopy, Mode::PostCopy, Mode::Hybrid];

    pub fn name(self) -> &'static str {
        match self {
            Mode::PreCopy => "pre-copy",
            Mode::PostCopy => "post-copy",
            Mode::Hybrid => "hybrid",
        }
    }

    /// The strategy that runs the mode (pre-copy: the default one).
    pub fn strategy(self) -> &'static str {
        match self {
            Mode::PreCopy => "downtime",
            Mode::PostCopy => "postcopy",
            Mode::Hybrid => "hybrid",
        }
    }

    /// The strategy's parameters: hybrid always ends in post-copy here
    /// (its post-copy phases are columns of the matrix), even where its
    /// rounds converge and it would copy the rest in the pause.
    pub fn strategy_params(self) -> std::collections::BTreeMap<String, String> {
        match self {
            Mode::Hybrid => [("copy-under".to_string(), "0s".to_string())].into(),
            _ => Default::default(),
        }
    }

    /// The points at which a failure can occur in this mode.
    pub fn points(self) -> &'static [Point] {
        match self {
            Mode::PreCopy => &[
                Point::Setup,
                Point::Round,
                Point::Switchover,
                Point::CommitWindow,
                Point::FinalGrant,
            ],
            Mode::PostCopy => &[
                Point::Setup,
                Point::Switchover,
                Point::JustAfter,
                Point::Half,
                Point::FewLeft,
                Point::FinalGrant,
            ],
            Mode::Hybrid => &[
                Point::Setup,
                Point::Round,
                Point::Switchover,
                Point::JustAfter,
                Point::Half,
                Point::FewLeft,
                Point::FinalGrant,
            ],
        }
    }
}

/// One failure of the matrix's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    KillSource,
    KillDestination,
    CutLink,
    StallLink,
    CorruptFrame,
}

impl Failure {
    pub const ALL: [Failure; 5] = [
        Failure::KillSource,
        Failure::KillDestination,
        Failure::CutLink,
        Failure::StallLink,
        Failure::CorruptFrame,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Failure::KillSource => "kill -9 source",
            Failure::KillDestination => "kill -9 destination",
            Failure::CutLink => "cut link",
            Failure::StallLink => "stall link",
            Failure::CorruptFrame => "corrupt frame",
        }
    }

    /// What the proxy does for it. A kill holds the stream still (stall)
    /// at its frame, so the process dies exactly there.
    fn action(self) -> Action {
        match self {
            Failure::CutLink => Action::Cut,
            Failure::CorruptFrame => Action::Corrupt,
            _ => Action::Stall,
        }
    }

    pub fn is_kill(self) -> bool {
        matches!(self, Failure::KillSource | Failure::KillDestination)
    }
}

/// One of the matrix's columns: where in the migration the failure lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Point {
    /// In the Start frame (after the handshake).
    Setup,
    /// In a Pages frame of pre-copy, once 2 MiB went by in round 1 or later.
    Round,
    /// In the State frame (the VM is paused).
    Switchover,
    /// In the Commit frame (pre-copy).
    CommitWindow,
    /// As soon as the progress says post-copy.
    JustAfter,
    /// When half the post-copy set is left.
    Half,
    /// When an eighth of it is left.
    FewLeft,
    /// In the final LeaseGrant (the VM given up for good; a leased
    /// pre-copy has one too).
    FinalGrant,
}

impl Point {
    pub fn name(self) -> &'static str {
        match self {
            Point::Setup => "setup",
            Point::Round => "pre-copy round",
            Point::Switchover => "switchover",
            Point::CommitWindow => "commit window",
            Point::JustAfter => "just after the switch",
            Point::Half => "half the pages",
            Point::FewLeft => "a few left",
            Point::FinalGrant => "final grant",
        }
    }

    /// The frame the point is, for the points a frame marks.
    fn frame(self) -> Option<u8> {
        match self {
            Point::Setup => Some(kind::START),
            Point::Switchover => Some(STATE),
            Point::CommitWindow => Some(kind::COMMIT),
            Point::FinalGrant => Some(kind::LEASE_GRANT),
            _ => None,
        }
    }
}

/// When a trial's failure comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// At a point of the matrix.
    At(Point),
    /// This long after the migration started (a random trial).
    After(Duration),
}

/// What one trial does: a failure, when, in which mode, and, for the
/// proxy's failures, the fault it arms.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub mode: Mode,
    pub failure: Failure,
    pub when: When,
    /// The proxy's fault; `None`: the failure is a kill at a progress point.
    pub fault: Option<Fault>,
}

impl Plan {
    /// The cell of the matrix: failure at point in mode.
    pub fn cell(mode: Mode, failure: Failure, point: Point) -> Plan {
        let fault = match point.frame() {
            // A kill waits just before the frame; the others act inside it.
            Some(k) if failure.is_kill() => {
                Some(Fault::new(Dir::ToDest, k, Action::Stall).at(Spot::Before))
            }
            Some(k) => Some(Fault::new(Dir::ToDest, k, failure.action())),
            // A progress point: kills happen then, the proxy acts in the
            // next Pages frame once armed then.
            None if failure.is_kill() => None,
            None => Some(Fault::new(Dir::ToDest, PAGES, failure.action()).disarmed()),
        };
        // The final grant is the one answering request 0.
        let fault = fault.map(|f| match point {
            Point::FinalGrant => f.starting_with(0),
            _ => f,
        });
        Plan {
            mode,
            failure,
            when: When::At(point),
            fault,
        }
    }

    /// The row label of the table: the cell, or `random` with the mode and
    /// failure.
    pub fn label(&self) -> String {
        match self.when {
            When::At(p) => format!(
                "{} / {} / {}",
                self.mode.name(),
                self.failure.name(),
                p.name()
            ),
            When::After(_) => format!("random / {} / {}", self.mode.name(), self.failure.name()),
        }
    }

    /// Whether the VM must outlive this failure (docs/SAFETY.md's RB, RC,
    /// RS, RR, C): not when the source dies before the post-copy switch
    /// (DS) nor in the commit window (ID), nor a destination that dies as
    /// the source gives the VM up (ID: it may have heard the final grant).
    /// A source killed in post-copy is restarted on its state directory
    /// (RR). The report's own location narrows it further per trial.
    pub fn survivable(&self) -> bool {
        let post = matches!(
            self.when,
            When::At(Point::JustAfter | Point::Half | Point::FewLeft | Point::FinalGrant)
        );
        let in_doubt = match self.when {
            When::At(Point::CommitWindow) => true,
            When::At(Point::FinalGrant) => self.failure == Failure::KillDestination,
            _ => false,
        };
        (self.failure != Failure::KillSource || post) && !in_doubt
    }
}

/// Every cell that can occur, in the order trials cycle through them.
pub fn matrix() -> Vec<Plan> {
    let mut cells = Vec::new();
    for mode in Mode::ALL {
        for &point in mode.points() {
            for failure in Failure::ALL {
                cells.push(Plan::cell(mode, failure, point));
            }
        }
    }
    cells
}

/// Frames a random proxy failure may hit, with the direction they go.
const RANDOM_FRAMES: [(Dir, u8); 10] = [
    (Dir::ToDest, PAGES),
    (Dir::ToDest, STATE),
    (Dir::ToDest, kind::COMMIT),
    (Dir::ToDest, kind::ROUND_END),
    (Dir::ToDest, kind::TXN_ACK),
    (Dir::ToSource, kind::ACCEPT),
    (Dir::ToSource, kind::READY),
    (Dir::ToSource, kind::PAGE_REQUEST),
    (Dir::ToSource, kind::TXN_END),
    (Dir::ToSource, kind::LEASE_REQUEST),
];

/// Random failures happen within this long of the migration's start.
pub const RANDOM_WITHIN: Duration = Duration::from_secs(2);

/// A random trial drawn from `rng`: any mode and failure, at a random
/// time, on a random frame for the proxy's failures.
pub fn random(rng: &mut Rng) -> Plan {
    let mode = Mode::ALL[rng.below(3) as usize];
    let failure = Failure::ALL[rng.below(5) as usize];
    let after = Duration::from_millis(rng.below(RANDOM_WITHIN.as_millis() as u64));
    let fault = (!failure.is_kill()).then(|| {
        let (dir, k) = RANDOM_FRAMES[rng.below(RANDOM_FRAMES.len() as u64) as usize];
        let spot = match (failure, rng.below(3)) {
            (Failure::CorruptFrame, _) | (_, 0) => Spot::Inside,
            (_, 1) => Spot::Before,
            _ => Spot::After,
        };
        Fault::new(dir, k, failure.action()).at(spot).disarmed()
    });
    Plan {
        mode,
        failure,
        when: When::After(after),
        fault,
    }
}

/// SplitMix64: reproducible from `--seed`, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_has_every_cell_that_can_occur() {
        let cells = matrix();
        assert_eq!(cells.len(), 5 * (5 + 6 + 7));
        // Kills at progress points need no proxy fault; the rest do.
        for c in &cells {
            let progress = matches!(c.when, When::At(p) if p.frame().is_none());
            assert_eq!(c.fault.is_none(), progress && c.failure.is_kill(), "{c:?}");
        }
        assert!(
            !cells
                .iter()
                .any(|c| c.mode != Mode::PreCopy && c.when == When::At(Point::CommitWindow))
        );
    }

    #[test]
    fn random_trials_repeat_with_their_seed() {
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..20).map(|_| random(&mut r).label()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let mut r = Rng::new(1);
        for _ in 0..100 {
            let p = random(&mut r);
            assert!(matches!(p.when, When::After(d) if d < RANDOM_WITHIN));
            assert_eq!(p.fault.is_none(), p.failure.is_kill());
        }
    }
}
