//! A custom strategy using the hooks later strategies need: hot pages held
//! back, vCPU throttling, and throttling undone on rollback.

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
    assert!(r.per_round[2..5].iter().any(|x| x.pages_skipped > 0), "{r}");
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
