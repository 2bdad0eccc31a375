//! Strategies: before every round the engine asks the strategy whether to
//! run another pre-copy round (and how: rate, which pages to hold back,
//! whether to skip pages dirtied again mid-round, vCPU throttling) or to stop
//! the VM and copy the rest.

use std::time::Duration;

use thiserror::Error;

use crate::bitmap::{DirtyBitmap, PAGE_SIZE};
use crate::history::PageHistory;
use crate::report::RoundReport;
use units::Bandwidth;

/// Name of the default strategy (chosen on the benchmark, docs/BENCHMARKS.md).
pub const DEFAULT_STRATEGY: &str = "downtime";

/// Every strategy name [`strategy_by_name`] knows.
pub const STRATEGIES: &[&str] = &["stop-and-copy", "xen", "downtime"];

/// What a strategy sees before each round.
pub struct StrategyContext<'a> {
    /// Number of the round about to be planned (1-based).
    pub round: u32,
    /// Pages that would be sent in it.
    pub pending: &'a DirtyBitmap,
    pub pending_pages: u64,
    /// Per-page dirty and send history.
    pub history: &'a PageHistory,
    /// Completed rounds.
    pub rounds: &'a [RoundReport],
    pub memory_bytes: u64,
    /// Bytes written to the connection so far (handshake included).
    pub bytes_sent: u64,
    /// Time since the migration started.
    pub elapsed: Duration,
    /// The user's bandwidth cap (`None` = unlimited).
    pub max_bandwidth: Option<Bandwidth>,
    /// The user's downtime target.
    pub max_downtime: Duration,
}

impl StrategyContext<'_> {
    /// Bandwidth the connection achieved, bits/s: the last round's if it
    /// lasted long enough to be meaningful, else the average over all rounds.
    pub fn measured_bandwidth_bps(&self) -> Option<f64> {
        let last = self.rounds.last()?;
        if last.duration_ms >= 50.0 && last.bytes > 0 {
            return Some(last.transfer_rate_bps);
        }
        let bytes: u64 = self.rounds.iter().map(|r| r.bytes).sum();
        let ms: f64 = self.rounds.iter().map(|r| r.duration_ms).sum();
        (ms > 0.0 && bytes > 0).then(|| bytes as f64 * 8.0 / (ms / 1000.0))
    }

    /// The guest's dirty rate in the last round, bits/s.
    pub fn last_dirty_rate_bps(&self) -> Option<f64> {
        self.rounds.last().map(|r| r.dirty_rate_bps)
    }

    /// Bytes still to send if the VM stopped now (an upper bound: zero pages cost less).
    pub fn pending_bytes(&self) -> u64 {
        self.pending_pages * PAGE_SIZE
    }
}

/// How to run one pre-copy round.
#[derive(Clone, Debug, Default)]
pub struct RoundPlan {
    /// Rate limit for this round; the engine also applies the user's cap.
    pub rate_limit: Option<Bandwidth>,
    /// Skip a pending page if the guest dirtied it again since the round
    /// began (it will be sent in a later round anyway).
    pub skip_redirtied: bool,
    /// Pages to hold back this round (they stay pending).
    pub hold_back: Option<DirtyBitmap>,
    /// Throttle the vCPUs to this fraction of time not running (if the VM supports it).
    pub throttle: Option<f64>,
}

/// A strategy's answer before each round.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Run another pre-copy round with the VM running.
    Round(RoundPlan),
    /// Pause the VM and send everything pending.
    StopAndCopy,
}

/// Decides, round by round, how pre-copy proceeds and when it ends.
pub trait Strategy: Send {
    fn name(&self) -> &str;
    fn decide(&mut self, ctx: &StrategyContext<'_>) -> Decision;
}

/// Non-live baseline: stop the VM at once and copy all memory.
#[derive(Clone, Debug, Default)]
pub struct StopAndCopy;

impl Strategy for StopAndCopy {
    fn name(&self) -> &str {
        "stop-and-copy"
    }
    fn decide(&mut self, _ctx: &StrategyContext<'_>) -> Decision {
        Decision::StopAndCopy
    }
}

/// Parameters of [`Xen`] (defaults from Clark et al. 2005 and libxc).
#[derive(Clone, Debug, PartialEq)]
pub struct XenParams {
    /// Rate of the first round, and the floor of later rounds.
    pub start_rate: Bandwidth,
    /// Added to the measured dirty rate for the next round.
    pub increment: Bandwidth,
    /// Stop after this many pre-copy rounds.
    pub max_rounds: u32,
    /// Stop when fewer pages than this are pending.
    pub min_pending_pages: u64,
    /// Stop once this many times the memory size has been sent.
    pub max_factor: f64,
}

impl Default for XenParams {
    fn default() -> Self {
        XenParams {
            start_rate: Bandwidth::from_bits_per_sec(100_000_000).expect("non-zero"),
            increment: Bandwidth::from_bits_per_sec(50_000_000).expect("non-zero"),
            max_rounds: 30,
            min_pending_pages: 50,
            max_factor: 3.0,
        }
    }
}

/// Xen's classic pre-copy (Clark et al., NSDI 2005, §5.1; libxc): rounds
/// rate-limited from 100 Mbit/s, each next round at the last round's dirty
/// rate + 50 Mbit/s up to the cap; pages dirtied again during a round are
/// skipped to the next; stop-and-copy after 30 rounds, under 50 pending
/// pages, after 3x memory sent, or when the rate the next round would need
/// exceeds the cap (pre-copy can no longer keep up with the guest).
#[derive(Clone, Debug, Default)]
pub struct Xen {
    pub params: XenParams,
}

impl Strategy for Xen {
    fn name(&self) -> &str {
        "xen"
    }

    fn decide(&mut self, ctx: &StrategyContext<'_>) -> Decision {
        let p = &self.params;
        if ctx.round > 1 {
            let done = ctx.round > p.max_rounds
                || ctx.pending_pages < p.min_pending_pages
                || ctx.bytes_sent as f64 >= p.max_factor * ctx.memory_bytes as f64;
            if done {
                return Decision::StopAndCopy;
            }
        }
        let rate = match ctx.last_dirty_rate_bps() {
            None => p.start_rate.bits_per_sec(),
            Some(dirty) => {
                let want = dirty as u64 + p.increment.bits_per_sec();
                if let Some(cap) = ctx.max_bandwidth
                    && want > cap.bits_per_sec()
                {
                    // The guest dirties faster than the link can follow.
                    return Decision::StopAndCopy;
                }
                want.max(p.start_rate.bits_per_sec())
            }
        };
        let rate = match ctx.max_bandwidth {
            Some(cap) => rate.min(cap.bits_per_sec()),
            None => rate,
        };
        Decision::Round(RoundPlan {
            rate_limit: Bandwidth::from_bits_per_sec(rate),
            skip_redirtied: true,
            ..RoundPlan::default()
        })
    }
}

/// Parameters of [`DowntimeTarget`].
#[derive(Clone, Debug, PartialEq)]
pub struct DowntimeParams {
    /// Force the switchover after this many pre-copy rounds.
    pub max_rounds: u32,
    /// Force the switchover once the migration has run this long.
    pub max_time: Duration,
}

impl Default for DowntimeParams {
    fn default() -> Self {
        DowntimeParams {
            max_rounds: 30,
            max_time: Duration::from_secs(60),
        }
    }
}

/// QEMU's rule: keep copying at full (capped) speed, and switch over as soon
/// as the pending dirty bytes can be sent within the downtime target at the
/// measured bandwidth. Unlike QEMU, which would iterate forever on a guest
/// that dirties faster than the link, the switchover is forced after
/// `max_rounds` rounds or `max_time`.
#[derive(Clone, Debug, Default)]
pub struct DowntimeTarget {
    pub params: DowntimeParams,
}

impl Strategy for DowntimeTarget {
    fn name(&self) -> &str {
        "downtime"
    }

    fn decide(&mut self, ctx: &StrategyContext<'_>) -> Decision {
        if ctx.round > 1 {
            if ctx.pending_pages == 0
                || ctx.round > self.params.max_rounds
                || ctx.elapsed >= self.params.max_time
            {
                return Decision::StopAndCopy;
            }
            if let Some(bw) = ctx.measured_bandwidth_bps() {
                let budget = bw / 8.0 * ctx.max_downtime.as_secs_f64();
                if (ctx.pending_bytes() as f64) <= budget {
                    return Decision::StopAndCopy;
                }
            }
        }
        Decision::Round(RoundPlan::default())
    }
}

/// A strategy name [`strategy_by_name`] does not know.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("unknown strategy '{0}' (known: stop-and-copy, xen, downtime)")]
pub struct UnknownStrategy(pub String);

/// The strategy called `name`, with default parameters.
pub fn strategy_by_name(name: &str) -> Result<Box<dyn Strategy>, UnknownStrategy> {
    match name {
        "stop-and-copy" => Ok(Box::new(StopAndCopy)),
        "xen" => Ok(Box::new(Xen::default())),
        "downtime" => Ok(Box::new(DowntimeTarget::default())),
        other => Err(UnknownStrategy(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitmap::PageLayout;
    use std::sync::Arc;

    struct Fixture {
        layout: Arc<PageLayout>,
        pending: DirtyBitmap,
        history: PageHistory,
        rounds: Vec<RoundReport>,
    }

    impl Fixture {
        fn new(pending: u64) -> Self {
            let layout = PageLayout::new(&[(0, 1 << 30)]).unwrap();
            let mut p = DirtyBitmap::new(&layout);
            p.set_run(0, pending);
            Fixture {
                history: PageHistory::new(&layout),
                pending: p,
                layout,
                rounds: Vec::new(),
            }
        }
        fn ctx(&self, round: u32, bytes_sent: u64, cap: Option<u64>) -> StrategyContext<'_> {
            StrategyContext {
                round,
                pending_pages: self.pending.count(),
                pending: &self.pending,
                history: &self.history,
                rounds: &self.rounds,
                memory_bytes: self.layout.bytes(),
                bytes_sent,
                elapsed: Duration::from_secs(1),
                max_bandwidth: cap.and_then(Bandwidth::from_bits_per_sec),
                max_downtime: Duration::from_millis(300),
            }
        }
    }

    fn round(dirty_bps: f64, rate_bps: f64) -> RoundReport {
        RoundReport {
            round: 1,
            duration_ms: 1000.0,
            bytes: (rate_bps / 8.0) as u64,
            transfer_rate_bps: rate_bps,
            dirty_rate_bps: dirty_bps,
            ..Default::default()
        }
    }

    fn rate_of(d: Decision) -> Option<u64> {
        match d {
            Decision::Round(p) => Some(p.rate_limit.map_or(0, |b| b.bits_per_sec())),
            Decision::StopAndCopy => None,
        }
    }

    #[test]
    fn xen_rates_and_stop_rules() {
        let mut x = Xen::default();
        let mut f = Fixture::new(10_000);
        let cap = Some(1_000_000_000);
        assert_eq!(rate_of(x.decide(&f.ctx(1, 0, cap))), Some(100_000_000));
        f.rounds.push(round(200e6, 100e6));
        assert_eq!(
            rate_of(x.decide(&f.ctx(2, 1 << 20, cap))),
            Some(250_000_000)
        );
        // Floor at the start rate when the guest is quiet.
        f.rounds.push(round(1e6, 250e6));
        assert_eq!(
            rate_of(x.decide(&f.ctx(3, 1 << 20, cap))),
            Some(100_000_000)
        );
        // The dirty rate outruns the cap: stop.
        f.rounds.push(round(990e6, 100e6));
        assert_eq!(rate_of(x.decide(&f.ctx(4, 1 << 20, cap))), None);
        // Without a cap it keeps going, faster.
        assert_eq!(
            rate_of(x.decide(&f.ctx(4, 1 << 20, None))),
            Some(1_040_000_000)
        );
        f.rounds.push(round(1e6, 100e6));
        // 31st round: stop.
        assert_eq!(rate_of(x.decide(&f.ctx(31, 1 << 20, cap))), None);
        // 3x memory sent: stop.
        assert_eq!(rate_of(x.decide(&f.ctx(5, 3 << 30, cap))), None);
        // Fewer than 50 pending pages: stop (but never before round 1).
        let f = Fixture::new(49);
        assert_eq!(rate_of(x.decide(&f.ctx(2, 0, cap))), None);
        assert!(rate_of(x.decide(&f.ctx(1, 0, cap))).is_some());
    }

    #[test]
    fn downtime_switches_when_the_rest_fits() {
        let mut d = DowntimeTarget::default();
        // 10_000 pages = 40 MB; at 1 Gbit/s (125 MB/s) that is 330 ms > 300 ms.
        let mut f = Fixture::new(10_000);
        assert!(matches!(d.decide(&f.ctx(1, 0, None)), Decision::Round(_)));
        f.rounds.push(round(0.0, 1e9));
        assert!(matches!(d.decide(&f.ctx(2, 0, None)), Decision::Round(_)));
        let mut g = Fixture::new(9_000); // 36.9 MB: 295 ms
        g.rounds.push(round(0.0, 1e9));
        assert!(matches!(
            d.decide(&g.ctx(2, 0, None)),
            Decision::StopAndCopy
        ));
        // Round cap.
        assert!(matches!(
            d.decide(&f.ctx(31, 0, None)),
            Decision::StopAndCopy
        ));
    }

    #[test]
    fn names() {
        for n in STRATEGIES {
            assert_eq!(strategy_by_name(n).unwrap().name(), *n);
        }
        assert!(STRATEGIES.contains(&DEFAULT_STRATEGY));
        let e = strategy_by_name("yolo").err().unwrap().to_string();
        assert!(e.contains("yolo") && e.contains("xen"));
    }
}
