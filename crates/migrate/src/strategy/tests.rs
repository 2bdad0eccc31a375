use super::*;
use crate::bitmap::PageLayout;
use std::sync::Arc;

/// A synthetic migration: 1 GiB of memory, a pending set, a history of
/// rounds, and the context a strategy sees.
pub(super) struct Fixture {
    layout: Arc<PageLayout>,
    pending: DirtyBitmap,
    history: PageHistory,
    pub rounds: Vec<RoundReport>,
}

impl Fixture {
    /// `pending` pages pending (0..pending), no history.
    pub fn new(pending: u64) -> Self {
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
    /// Pages `[first, first + count)` are pending, no others.
    pub fn set_pending(&mut self, first: u64, count: u64) {
        self.pending.clear();
        self.pending.set_run(first, count);
    }

    /// A completed round of 1 s at `rate_bps` in which the guest dirtied
    /// the pages of `runs` (first, count); they are pending now.
    pub fn dirty_round(&mut self, runs: &[(u64, u64)], rate_bps: f64) {
        let mut d = DirtyBitmap::new(&self.layout);
        for &(first, count) in runs {
            d.set_run(first, count);
        }
        self.history.end_round(&d);
        let pages = d.count();
        self.rounds.push(RoundReport {
            round: self.rounds.len() as u32 + 1,
            pages_dirtied: pages,
            duration_ms: 1000.0,
            bytes: (rate_bps / 8.0) as u64,
            transfer_rate_bps: rate_bps,
            dirty_rate_bps: (pages * PAGE_SIZE * 8) as f64,
            ..Default::default()
        });
        self.pending = d;
    }

    /// The context before round `round`.
    pub fn ctx(&self, round: u32, bytes_sent: u64, cap: Option<u64>) -> StrategyContext<'_> {
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
        Decision::StopAndCopy | Decision::Postcopy => None,
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
    // 30 rounds at most: a limit the engine enforces.
    assert_eq!(x.limits().max_rounds, Some(30));
    assert_eq!(x.limits().max_time, None);
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
    // Its bounds are limits the engine enforces, not decisions.
    assert!(matches!(d.decide(&f.ctx(31, 0, None)), Decision::Round(_)));
    let l = d.limits();
    assert_eq!(l.max_rounds, Some(30));
    assert_eq!(l.max_time, Some(Duration::from_secs(60)));
    assert_eq!(StopAndCopy.limits(), Limits::default());
}

#[test]
fn names() {
    for n in STRATEGIES {
        let kind: StrategyKind = n.parse().unwrap();
        assert_eq!(kind.to_string(), *n);
        assert_eq!(kind.build().name(), *n);
    }
    assert!(STRATEGIES.contains(&DEFAULT_STRATEGY));
    let e = "yolo".parse::<StrategyKind>().unwrap_err().to_string();
    assert!(e.contains("yolo") && e.contains("xen"), "{e}");
}

#[test]
fn parameters_parse_once_and_fail_in_one_line() {
    let p = StrategyParams::parse(["alpha=0.3", " threshold = 0.6 "]).unwrap();
    assert_eq!(p.get("threshold"), Some("0.6"));
    assert_eq!(StrategyParams::from_map(&p.to_map()).unwrap(), {
        let mut q = StrategyParams::new();
        q.insert("alpha", "0.3").unwrap();
        q.insert("threshold", "0.6").unwrap();
        q
    });
    let e = |r: Result<StrategyParams, StrategyError>| r.unwrap_err().to_string();
    assert_eq!(
        e(StrategyParams::parse(["alpha"])),
        "strategy parameter 'alpha' is not KEY=VALUE"
    );
    assert_eq!(
        e(StrategyParams::parse(["=3"])),
        "strategy parameter '=3' is not KEY=VALUE"
    );
    assert_eq!(
        e(StrategyParams::parse(["a=1", "a=2"])),
        "strategy parameter 'a' is given twice"
    );
    // Every strategy builds with no parameters; stop-and-copy takes none.
    for kind in StrategyKind::ALL {
        assert!(kind.build_with(&StrategyParams::new()).is_ok(), "{kind}");
    }
    let one = StrategyParams::parse(["max-rounds=5"]).unwrap();
    let err = StrategyKind::StopAndCopy
        .build_with(&one)
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "strategy stop-and-copy has no parameter 'max-rounds' (it takes none)"
    );
    for kind in [StrategyKind::Xen, StrategyKind::Downtime] {
        assert!(kind.build_with(&one).is_ok());
    }
    let bad = StrategyParams::parse(["max-rounds=0"]).unwrap();
    let err = StrategyKind::Downtime.build_with(&bad).err().unwrap();
    assert_eq!(
        err.to_string(),
        "strategy downtime: max-rounds=0: must be in [1, 1000]"
    );
    let bad = StrategyParams::parse(["start-rate=100Mb"]).unwrap();
    let err = StrategyKind::Xen
        .build_with(&bad)
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("strategy xen: start-rate=100Mb: "), "{err}");
    assert!(!err.contains('\n'));
    // Hybrid's own keys, and its pre-copy strategy's.
    let p =
        StrategyParams::parse(["precopy=predictive", "min-shrink=0.1", "threshold=0.6"]).unwrap();
    assert!(StrategyKind::Hybrid.build_with(&p).is_ok());
    for (bad, want) in [
        ("precopy=hybrid", "must be a pre-copy strategy"),
        ("precopy=yolo", "unknown strategy"),
        ("min-shrink=2", "must be in"),
        ("gamma=0.9", "strategy predictive has no parameter 'gamma'"),
        ("copy-under=fast", "copy-under=fast"),
    ] {
        let p = StrategyParams::parse([bad]).unwrap();
        let err = StrategyKind::Hybrid
            .build_with(&p)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(want), "{bad}: {err}");
    }
}

/// Pre-copy rules that hold pages `0..n` back for the pause every round.
struct Holding(u64);

impl Strategy for Holding {
    fn name(&self) -> &str {
        "holding"
    }
    fn decide(&mut self, ctx: &StrategyContext<'_>) -> Decision {
        let mut held = DirtyBitmap::new(ctx.history.layout());
        held.set_run(0, self.0);
        Decision::Round(RoundPlan {
            hold_back: Some(held),
            ..RoundPlan::default()
        })
    }
}

/// Pre-copy rules that always stop.
struct Stopping;

impl Strategy for Stopping {
    fn name(&self) -> &str {
        "stopping"
    }
    fn decide(&mut self, _ctx: &StrategyContext<'_>) -> Decision {
        Decision::StopAndCopy
    }
}

#[test]
fn hybrid_copies_in_the_pause_only_a_rest_quicker_than_a_switch() {
    let hybrid = |copy_under| {
        let params = HybridParams {
            copy_under,
            ..HybridParams::default()
        };
        Hybrid::with_precopy(params, Box::new(Stopping))
    };
    let mut f = Fixture::new(0);
    f.rounds.push(round(1e6, 1e9));
    // At 1 Gbit/s 200 pages copy in 6.6 ms, 2,000 in 66 ms: the first under
    // the default 10 ms, the second under the 300 ms downtime target only.
    let decide = |f: &Fixture, copy_under, target_ms| {
        let mut ctx = f.ctx(3, 1 << 30, Some(1_000_000_000));
        ctx.max_downtime = Duration::from_millis(target_ms);
        hybrid(copy_under).decide(&ctx)
    };
    f.set_pending(0, 200);
    assert!(matches!(decide(&f, None, 300), Decision::StopAndCopy));
    // A downtime target below the default lowers it.
    assert!(matches!(decide(&f, None, 5), Decision::Postcopy));
    f.set_pending(0, 2_000);
    assert!(matches!(decide(&f, None, 300), Decision::Postcopy));
    let longer = Some(Duration::from_millis(100));
    assert!(matches!(decide(&f, longer, 300), Decision::StopAndCopy));
}

#[test]
fn hybrid_counts_the_dirty_rate_of_the_pages_the_rules_would_resend() {
    // 40,000 pages dirtied per second (1.3 Gbit/s) over a 1 Gbit/s link.
    let mut f = Fixture::new(262_144);
    f.dirty_round(&[(0, 40_000)], 1e9);
    f.dirty_round(&[(0, 40_000)], 1e9);
    let hybrid = |held| Hybrid::with_precopy(HybridParams::default(), Box::new(Holding(held)));
    // Held back for the pause, they never go over the link in a round.
    assert!(matches!(
        hybrid(40_000).decide(&f.ctx(3, 1 << 30, None)),
        Decision::Round(_)
    ));
    // Resent each round, they outrun it: switch.
    assert!(matches!(
        hybrid(0).decide(&f.ctx(3, 1 << 30, None)),
        Decision::Postcopy
    ));
}

#[test]
fn hybrid_switches_to_postcopy_when_rounds_stop_paying() {
    let mut h = Hybrid::new(HybridParams {
        precopy: StrategyKind::Downtime,
        min_shrink: 0.25,
        ..HybridParams::default()
    });
    let mut f = Fixture::new(262_144);
    // Round 1 always runs.
    assert!(matches!(h.decide(&f.ctx(1, 0, None)), Decision::Round(_)));
    // The set shrank a lot (all memory -> 10%): another round.
    f.rounds.push(RoundReport {
        pages_pending: 262_144,
        ..round(1e6, 1e9)
    });
    f.pending = DirtyBitmap::new(&f.layout);
    f.pending.set_run(0, 26_214);
    assert!(matches!(
        h.decide(&f.ctx(2, 1 << 30, None)),
        Decision::Round(_)
    ));
    // It no longer shrinks: switch.
    f.rounds.push(RoundReport {
        pages_pending: 26_214,
        ..round(1e6, 1e9)
    });
    f.pending.set_run(0, 25_000);
    assert!(matches!(
        h.decide(&f.ctx(3, 1 << 30, None)),
        Decision::Postcopy
    ));
    // The guest dirties faster than the link: switch.
    f.rounds.push(RoundReport {
        pages_pending: 100_000,
        ..round(2e9, 1e9)
    });
    assert!(matches!(
        h.decide(&f.ctx(4, 1 << 30, None)),
        Decision::Postcopy
    ));
    // Where the wrapped rules would stop and copy, hybrid switches...
    f.rounds.push(RoundReport {
        pages_pending: 100_000,
        ..round(1e6, 1e6)
    });
    f.pending = DirtyBitmap::new(&f.layout);
    f.pending.set_run(0, 10);
    assert!(matches!(
        h.decide(&f.ctx(5, 1 << 30, None)),
        Decision::Postcopy
    ));
    // ...unless the rest copies faster than a switch costs (10 pages at
    // 1 Gbit/s: 0.3 ms), or copying in the pause was turned off.
    f.rounds.push(RoundReport {
        pages_pending: 100_000,
        ..round(1e6, 1e9)
    });
    assert!(matches!(
        h.decide(&f.ctx(6, 1 << 30, None)),
        Decision::StopAndCopy
    ));
    let p = StrategyParams::parse(["precopy=downtime", "copy-under=0s"]).unwrap();
    let mut never = StrategyKind::Hybrid.build_with(&p).unwrap();
    assert!(matches!(
        never.decide(&f.ctx(6, 1 << 30, None)),
        Decision::Postcopy
    ));
    // Not even an empty rest.
    f.pending = DirtyBitmap::new(&f.layout);
    assert!(matches!(
        never.decide(&f.ctx(6, 1 << 30, None)),
        Decision::Postcopy
    ));
    assert!(matches!(h.switchover(), Decision::Postcopy));
    assert_eq!(h.limits(), DowntimeTarget::default().limits());
    assert!(matches!(
        Postcopy.decide(&f.ctx(1, 0, None)),
        Decision::Postcopy
    ));
}
