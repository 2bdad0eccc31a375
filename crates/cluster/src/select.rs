//! VM selection: which VM leaves a hotspot first.

use crate::names::{self, UnknownName};
use crate::stats;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A VM selection policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// Minimum migration time: the VM with the least memory (MMT).
    MinMigrationTime,
    /// Uniformly random among the movable VMs (RS), from the engine's seeded RNG.
    Random,
    /// Maximum correlation (MC): the VM whose CPU history is best explained
    /// (highest R²) by the other VMs' histories; falls back to MMT when the
    /// history is too short for the regression.
    MaxCorrelation,
    /// Minimum utilization (MU): the VM using the smallest share of its size.
    MinUtilization,
    /// Sandpiper's volume-to-size ratio (VSR): the largest
    /// `1/((1-cpu)(1-mem)(1-net)) / memory`.
    VolumeToSize,
}

impl Selector {
    /// Every selector, in the order names are listed.
    pub const ALL: [Selector; 5] = [
        Selector::MinMigrationTime,
        Selector::Random,
        Selector::MaxCorrelation,
        Selector::MinUtilization,
        Selector::VolumeToSize,
    ];

    /// Whether the selector reads the candidates' histories (only MC).
    pub fn reads_history(self) -> bool {
        self == Selector::MaxCorrelation
    }

    /// Short name used in policy names: mmt, rs, mc, mu, vsr.
    pub fn name(self) -> &'static str {
        match self {
            Selector::MinMigrationTime => "mmt",
            Selector::Random => "rs",
            Selector::MaxCorrelation => "mc",
            Selector::MinUtilization => "mu",
            Selector::VolumeToSize => "vsr",
        }
    }
}

impl std::str::FromStr for Selector {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        names::parse("selector", s, &Self::ALL, Self::name)
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One candidate as a selector sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub ram_mb: f64,
    /// Current demand / VM size.
    pub utilization: f64,
    /// CPU, memory and network shares of the host (0..1).
    pub cpu_share: f64,
    pub mem_share: f64,
    pub net_share: f64,
    /// CPU utilization history, newest first (the planner leaves it empty
    /// for selectors that do not read it: `Selector::reads_history`).
    pub history_newest_first: &'a [f64],
}

/// Picks the index (into `c`) of the VM to move; `None` when `c` is empty.
/// Ties go to the earliest candidate, as in CloudSim.
pub fn select(sel: Selector, c: &[Candidate], rng: &mut ChaCha8Rng) -> Option<usize> {
    if c.is_empty() {
        return None;
    }
    let argmin = |f: &dyn Fn(&Candidate) -> f64| {
        let mut best = 0;
        for i in 1..c.len() {
            if f(&c[i]) < f(&c[best]) {
                best = i;
            }
        }
        best
    };
    Some(match sel {
        Selector::MinMigrationTime => argmin(&|v| v.ram_mb),
        Selector::MinUtilization => argmin(&|v| v.utilization),
        Selector::Random => rng.random_range(0..c.len()),
        Selector::VolumeToSize => argmin(&|v| -vsr(v)),
        Selector::MaxCorrelation => match correlations(c) {
            Some(r2) => {
                // CloudSim starts from Double.MIN_VALUE and keeps index 0 if
                // nothing beats it.
                let mut best = 0;
                let mut max = f64::MIN_POSITIVE;
                for (i, m) in r2.iter().enumerate() {
                    if *m > max {
                        max = *m;
                        best = i;
                    }
                }
                best
            }
            None => argmin(&|v| v.ram_mb),
        },
    })
}

fn vsr(v: &Candidate) -> f64 {
    let f = |x: f64| 1.0 / (1.0 - x.clamp(0.0, 0.99));
    let volume = f(v.cpu_share) * f(v.mem_share) * f(v.net_share);
    volume / v.ram_mb.max(1.0)
}

/// R² of each VM's history regressed on the others' (over the longest common
/// recent window); `None` when there are fewer than two VMs or too few
/// observations for the regression.
fn correlations(c: &[Candidate]) -> Option<Vec<f64>> {
    if c.len() < 2 {
        return None;
    }
    let m = c.iter().map(|v| v.history_newest_first.len()).min()?;
    let rows: Vec<&[f64]> = c.iter().map(|v| &v.history_newest_first[..m]).collect();
    let mut out = Vec::with_capacity(c.len());
    for i in 0..rows.len() {
        let others: Vec<&[f64]> = rows
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, r)| *r)
            .collect();
        out.push(stats::r_squared(rows[i], &others)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cand(ram: f64, util: f64, hist: &[f64]) -> Candidate<'_> {
        Candidate {
            ram_mb: ram,
            utilization: util,
            cpu_share: util / 2.0,
            mem_share: ram / 4096.0,
            net_share: 0.0,
            history_newest_first: hist,
        }
    }

    #[test]
    fn simple_selectors() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let c = [
            cand(1740.0, 0.9, &[]),
            cand(613.0, 0.5, &[]),
            cand(870.0, 0.1, &[]),
        ];
        assert_eq!(select(Selector::MinMigrationTime, &c, &mut rng), Some(1));
        assert_eq!(select(Selector::MinUtilization, &c, &mut rng), Some(2));
        // VSR: cpu share 0.45/0.25/0.05; the small, busy VM wins:
        // 1/(0.55*(1-613/4096))/613 is the largest.
        assert_eq!(select(Selector::VolumeToSize, &c, &mut rng), Some(1));
        assert_eq!(select(Selector::MinMigrationTime, &[], &mut rng), None);
        let r = select(Selector::Random, &c, &mut rng).unwrap();
        assert!(r < 3);
    }

    #[test]
    fn random_is_seeded() {
        let c = [cand(1.0, 0.1, &[]); 7];
        let picks = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..20)
                .map(|_| select(Selector::Random, &c, &mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(9), picks(9));
        assert!(picks(9).iter().any(|p| *p != picks(9)[0]));
    }

    #[test]
    fn max_correlation_picks_the_explained_vm() {
        // a and b move together; c is unrelated noise; a is exactly 2*b.
        let b = [0.1, 0.4, 0.2, 0.5, 0.3, 0.6, 0.2, 0.7];
        let a: Vec<f64> = b.iter().map(|x| 2.0 * x).collect();
        let c = [0.5, 0.5, 0.1, 0.9, 0.4, 0.2, 0.8, 0.3];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let cs = [
            cand(900.0, 0.5, &c),
            cand(800.0, 0.5, &a),
            cand(700.0, 0.5, &b),
        ];
        let pick = select(Selector::MaxCorrelation, &cs, &mut rng).unwrap();
        assert!(pick == 1 || pick == 2, "picked {pick}");
        // Too little history for 3 VMs (needs more than 3 observations): MMT.
        let cs = [
            cand(900.0, 0.5, &c[..3]),
            cand(800.0, 0.5, &a[..3]),
            cand(700.0, 0.5, &b[..3]),
        ];
        assert_eq!(select(Selector::MaxCorrelation, &cs, &mut rng), Some(2));
    }
}
