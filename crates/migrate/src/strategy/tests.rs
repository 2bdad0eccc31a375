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
