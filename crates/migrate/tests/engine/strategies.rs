//! The hooks strategies use (hot pages held back, vCPU throttling) with a
//! custom strategy, and the strategies built on them (`predictive`,
//! `delayed`, `auto-converge`): held-back pages arrive in the
//! stop-and-copy, the throttle is released at the switchover and on rollback.

use migrate::fake::{FakeFactory, FakeVm, WritePattern};
use migrate::faults::{Action, Dir, Fault, Spot};
use migrate::*;
use units::Bandwidth;
use wire::kind;

use crate::harness::*;

/// A strategy using the hooks later strategies need: per-page history to
/// hold hot pages back until stop-and-copy, and vCPU throttling.
struct HoldHot {
    rounds: u32,
}

impl Strategy for HoldHot {
    fn name(&self) -> &str {
        "hold-hot"
    }
    fn decide(&mut self, ctx: &StrategyContext<'_>) -> Decision {
        if ctx.round > self.rounds {
            return Decision::StopAndCopy;
        }
        let mut hot = DirtyBitmap::new(ctx.pending.layout());
        for page in ctx.pending.iter() {
            if ctx.history.dirty_count(page, 2) > 0 {
                hot.set(page);
            }
        }
        Decision::Round(RoundPlan {
            hold_back: Some(hot),
            throttle: (ctx.round >= 3).then_some(0.5),
            skip_redirtied: true,
            ..RoundPlan::default()
        })
    }
}

#[test]
fn custom_strategy_holds_hot_pages_back_and_throttles() {
    let mut spec = busy_spec(16);
    spec.vcpus = 2;
    spec.pattern = WritePattern::HotSet {
        hot_fraction: 0.05,
        hot_share: 0.95,
    };
    let mut vm = FakeVm::new(spec).unwrap();
    let factory = FakeFactory::default();
    let mut opts = source_opts("xen");
    opts.strategy = Box::new(HoldHot { rounds: 5 });
    // Rounds long enough for the guest thread to dirty pages even on a
    // loaded machine, so later rounds have history to act on.
    opts.max_bandwidth = Some(Bandwidth::parse("400Mbit").unwrap());
    let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
    let r = check_success(&vm, res, d, &factory);
    assert_eq!(r.strategy, "hold-hot");
    assert_eq!(r.rounds, 6, "{r}");
    // Rounds after the first hold back the pages dirtied recently.
    assert!(
        r.per_round[2..5].iter().any(|x| x.pages_held_back > 0),
        "{r}"
    );
    assert!(vm.calls.contains(&"throttle"));
}

#[test]
fn throttle_is_undone_on_rollback() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    let mut opts = source_opts("xen");
    opts.strategy = Box::new(HoldHot { rounds: 50 });
    opts.max_bandwidth = Some(Bandwidth::parse("200Mbit").unwrap());
    let fault = Fault::new(Dir::ToDest, kind::ROUND_BEGIN, Action::Cut)
        .nth(4)
        .at(Spot::Before);
    let (res, _d) = run(
        &mut vm,
        opts,
        factory.clone(),
        dest_opts(1 << 30),
        Some(fault),
    );
    assert_rolled_back(&vm, &res, &factory);
    assert!(vm.calls.contains(&"throttle"));
    assert_eq!(vm.throttle_fraction(), 0.0);
}

/// Options for `strategy` with `params` (KEY=VALUE).
fn opts_with(strategy: &str, params: &[&str]) -> SourceOptions {
    let mut o = source_opts(strategy);
    let kind: StrategyKind = strategy.parse().unwrap();
    o.strategy = kind
        .build_with(&StrategyParams::parse(params).unwrap())
        .unwrap();
    o
}

/// A guest with a hot set: 5 % of its working set takes 99 % of its
/// writes, fast enough that even a short round sees the hot pages written.
fn hot_spec() -> migrate::fake::FakeSpec {
    let mut spec = busy_spec(16);
    spec.writes_per_sec = 20_000;
    spec.pattern = WritePattern::HotSet {
        hot_fraction: 0.05,
        hot_share: 0.99,
    };
    spec
}

#[test]
fn predicted_hot_pages_are_held_back_and_sent_in_the_stop_and_copy() {
    for strategy in ["predictive", "delayed"] {
        let mut vm = FakeVm::new(hot_spec()).unwrap();
        let factory = FakeFactory::default();
        // Five live rounds whatever is pending, long enough for the guest
        // to write its hot pages in each, so that rounds 3-5 have the
        // history to predict from: predictive's adaptive rate under a cap
        // far above the guest's dirty rate, Xen's start rate for delayed
        // (under a cap, Xen's "dirty rate + 50 Mbit/s above the cap" rule
        // would end a short round by chance).
        let mut opts = opts_with(strategy, &["max-rounds=5", "min-pending=0"]);
        if strategy == "predictive" {
            opts.max_bandwidth = Some(Bandwidth::parse("40Mbit").unwrap());
        }
        let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
        // The destination is byte-identical to the source at pause.
        let r = check_success(&vm, res, d, &factory);
        assert_eq!(r.strategy, strategy);
        assert_eq!(r.rounds, 6, "{r}");
        let (live, last) = r.per_round.split_at(5);
        let held: Vec<u64> = live.iter().map(|x| x.pages_held_back).collect();
        assert!(held.iter().any(|&h| h > 0), "{strategy}: nothing held: {r}");
        for x in live {
            assert!(x.pages_predicted_hot.is_some(), "{r}");
            assert_eq!(
                x.prediction_precision.is_some(),
                x.pages_held_back > 0,
                "{r}"
            );
        }
        // What the last live round held back is pending in the stop-and-copy,
        // which holds nothing back and sends it.
        let last = &last[0];
        assert!(last.pages_pending >= held[4], "{r}");
        assert_eq!(last.pages_held_back, 0, "{r}");
        assert!(last.pages_predicted_hot.is_none(), "{r}");
    }
}

#[test]
fn auto_converge_throttles_and_releases_at_the_switchover() {
    let mut vm = FakeVm::new(busy_spec(16)).unwrap();
    let factory = FakeFactory::default();
    // A slow link the guest outruns; big steps so that it converges soon.
    let mut opts = opts_with(
        "auto-converge",
        &["initial=50", "increment=20", "trigger-rounds=1"],
    );
    opts.max_bandwidth = Some(Bandwidth::parse("40Mbit").unwrap());
    let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
    let r = check_success(&vm, res, d, &factory);
    let thr: Vec<f64> = r.per_round.iter().map(|x| x.throttle_pct).collect();
    assert!(thr.iter().any(|&t| t >= 50.0), "{r}");
    // Never lowered while pre-copy runs; none in the paused round.
    let live = &thr[..thr.len() - 1];
    assert!(live.windows(2).all(|w| w[0] <= w[1]), "{thr:?}");
    assert_eq!(*thr.last().unwrap(), 0.0);
    // Released right after the pause, before anything moves.
    assert_eq!(vm.throttle_fraction(), 0.0);
    let pause = vm.calls.iter().position(|&c| c == "pause").unwrap();
    assert_eq!(vm.calls.get(pause + 1), Some(&"throttle"), "{:?}", vm.calls);
}

#[test]
fn the_new_strategies_roll_back_unthrottled() {
    for strategy in ["predictive", "delayed", "auto-converge"] {
        // At least five live rounds: predictive and delayed by their
        // parameters, auto-converge because a uniform writer outruns the cap.
        let (spec, params, cap): (_, &[&str], _) = match strategy {
            "auto-converge" => (busy_spec(16), &["trigger-rounds=1"], Some("40Mbit")),
            _ => (hot_spec(), &["max-rounds=5", "min-pending=0"], None),
        };
        let mut vm = FakeVm::new(spec).unwrap();
        let factory = FakeFactory::default();
        let mut opts = opts_with(strategy, params);
        opts.max_bandwidth = cap.map(|c| Bandwidth::parse(c).unwrap());
        // Cut the connection before round 4 begins.
        let fault = Fault::new(Dir::ToDest, kind::ROUND_BEGIN, Action::Cut)
            .nth(4)
            .at(Spot::Before);
        let (res, _d) = run(
            &mut vm,
            opts,
            factory.clone(),
            dest_opts(1 << 30),
            Some(fault),
        );
        assert_rolled_back(&vm, &res, &factory);
        assert_eq!(vm.throttle_fraction(), 0.0, "{strategy}");
        if strategy == "auto-converge" {
            let report = &res.as_ref().unwrap_err().report;
            assert!(
                report.per_round.iter().any(|r| r.throttle_pct > 0.0),
                "{report}"
            );
        }
    }
}
