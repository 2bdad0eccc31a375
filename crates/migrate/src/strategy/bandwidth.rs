//! Self-adaptive bandwidth (seed 000): the rate of each round is a weight
//! factor times the guest's dirty rate, and the weight is corrected from
//! what the last round measured, instead of Xen's "+50 Mbit/s per round".
//!
//! A round sent at rate `T` while the guest dirtied (pages to be sent next)
//! at rate `D` leaves a next round `D / T` times as long: pre-copy
//! converges when that ratio `rho` stays below 1. The weight aims at a
//! target ratio `rho*`:
//!
//! ```text
//! w(k+1) = clamp(w(k) * rho(k) / rho*, 1 / rho*, max_weight)
//! B(k+1) = clamp(w(k+1) * D(k), min_rate, cap)
//! ```
//!
//! In steady state `B = D / rho*`; when a round does not reach its rate
//! (a busy link, a busy host) or the guest speeds up, `rho` rises and the
//! weight with it; when the guest slows down, the bandwidth is given back.

use super::params::{ParamReader, Range, StrategyError};
use units::Bandwidth;

/// Parameters of the adaptive rate.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptiveRateParams {
    /// Ratio of dirty rate to transfer rate aimed at (`target-ratio`).
    pub target_ratio: f64,
    /// Largest weight (`max-weight`).
    pub max_weight: f64,
    /// Lowest rate of a round after the first (`min-rate`, Xen's start rate).
    pub min_rate: Bandwidth,
}

impl Default for AdaptiveRateParams {
    fn default() -> Self {
        AdaptiveRateParams {
            target_ratio: 0.5,
            max_weight: 8.0,
            min_rate: Bandwidth::from_bits_per_sec(100_000_000).expect("non-zero"),
        }
    }
}

impl AdaptiveRateParams {
    pub(super) fn read(r: &mut ParamReader<'_>) -> Result<Self, StrategyError> {
        let d = AdaptiveRateParams::default();
        let p = AdaptiveRateParams {
            target_ratio: r.number("target-ratio", d.target_ratio, Range::open(0.0, 1.0))?,
            max_weight: r.number("max-weight", d.max_weight, Range::closed(1.0, 1000.0))?,
            min_rate: r.bandwidth("min-rate", d.min_rate)?,
        };
        if p.max_weight < 1.0 / p.target_ratio {
            let v = p.max_weight.to_string();
            return Err(r.bad(
                "max-weight",
                &v,
                format_args!(
                    "must be at least 1 / target-ratio ({:.3})",
                    1.0 / p.target_ratio
                ),
            ));
        }
        Ok(p)
    }
}

/// The weight factor and the rates it gives.
#[derive(Clone, Debug)]
pub(super) struct AdaptiveRate {
    params: AdaptiveRateParams,
    weight: f64,
}

impl AdaptiveRate {
    pub fn new(params: AdaptiveRateParams) -> Self {
        AdaptiveRate {
            weight: 1.0 / params.target_ratio,
            params,
        }
    }

    #[cfg(test)]
    pub fn weight(&self) -> f64 {
        self.weight
    }

    /// The next round's rate, bits/s, from the last round's dirty rate (of
    /// the pages to be sent) and transfer rate, within `cap`.
    pub fn next(&mut self, dirty_bps: f64, transfer_bps: f64, cap: Option<Bandwidth>) -> u64 {
        let p = &self.params;
        let floor = 1.0 / p.target_ratio;
        if transfer_bps > 0.0 {
            let ratio = dirty_bps / transfer_bps;
            self.weight = (self.weight * ratio / p.target_ratio).clamp(floor, p.max_weight);
        }
        let rate = (self.weight * dirty_bps).max(p.min_rate.bits_per_sec() as f64) as u64;
        match cap {
            Some(c) => rate.min(c.bits_per_sec()),
            None => rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: f64 = 1e6;

    fn rate() -> AdaptiveRate {
        AdaptiveRate::new(AdaptiveRateParams::default())
    }

    #[test]
    fn steady_guest_gets_twice_its_dirty_rate() {
        let mut a = rate();
        // The last round ran at 400 Mbit/s while the guest dirtied 200:
        // rho = 0.5 = target, the weight stays 2.
        assert_eq!(a.next(200.0 * M, 400.0 * M, None), 400_000_000);
        assert_eq!(a.weight(), 2.0);
    }

    #[test]
    fn a_round_that_falls_behind_raises_the_weight() {
        let mut a = rate();
        // Asked 400, got 250 (busy link): rho = 0.8, weight 2 * 1.6 = 3.2.
        let r = a.next(200.0 * M, 250.0 * M, None);
        assert!((a.weight() - 3.2).abs() < 1e-9, "{}", a.weight());
        assert_eq!(r, 640_000_000);
        // Again: the weight keeps rising, up to max-weight.
        for _ in 0..10 {
            a.next(200.0 * M, 250.0 * M, None);
        }
        assert_eq!(a.weight(), 8.0);
    }

    #[test]
    fn a_quiet_guest_gives_bandwidth_back() {
        let mut a = rate();
        a.next(200.0 * M, 250.0 * M, None);
        // The guest slows down: rho = 0.1, the weight falls to its floor.
        let r = a.next(20.0 * M, 200.0 * M, None);
        assert_eq!(a.weight(), 2.0);
        // 2 x 20 Mbit/s is below the floor rate.
        assert_eq!(r, 100_000_000);
    }

    #[test]
    fn the_cap_bounds_the_rate() {
        let mut a = rate();
        let cap = Bandwidth::from_bits_per_sec(300_000_000);
        assert_eq!(a.next(200.0 * M, 400.0 * M, cap), 300_000_000);
    }
}
