//! Convergence control: round and time limits, the operator's over the
//! strategy's, and `OnTimeout` (abort rolls back, force switches over).

use std::time::Duration;

use migrate::fake::{FakeFactory, FakeSpec, FakeVm};
use migrate::*;
use units::Bandwidth;

use crate::harness::*;

/// A guest that dirties its working set faster than a 40 Mbit/s cap sends
/// it: the downtime strategy never sees the rest fit a 1 us target.
fn never_converges() -> (FakeVm, SourceOptions) {
    let mut spec = FakeSpec::new(4);
    spec.working_set_pages = 256;
    spec.writes_per_sec = 3000;
    let vm = FakeVm::new(spec).unwrap();
    assert!(vm.wait_for_writes(100, Duration::from_secs(5)));
    let mut opts = source_opts("downtime");
    opts.max_bandwidth = Some(Bandwidth::parse("40Mbit").unwrap());
    opts.max_downtime = Duration::from_micros(1);
    (vm, opts)
}

fn rounds(n: u32) -> Limits {
    Limits {
        max_rounds: Some(n),
        max_time: None,
    }
}

fn run_with(vm: &mut FakeVm, opts: SourceOptions, factory: &FakeFactory) -> RunResult {
    run(vm, opts, factory.clone(), dest_opts(1 << 30), None)
}

type RunResult = (Result<MigrationReport, Box<MigrationFailure>>, DestResult);

#[test]
fn max_rounds_with_abort_rolls_back() {
    let (mut vm, mut opts) = never_converges();
    opts.limits = rounds(3);
    opts.on_timeout = OnTimeout::Abort;
    let factory = FakeFactory::default();
    let (res, _) = run_with(&mut vm, opts, &factory);
    let msg = assert_rolled_back(&vm, &res, &factory);
    assert!(
        msg.contains("did not converge") && msg.contains("3 rounds"),
        "{msg}"
    );
    let fail = res.unwrap_err();
    assert!(matches!(
        fail.error,
        MigrateError::NotConverged {
            limit: LimitReached::MaxRounds,
            ..
        }
    ));
    assert_eq!(fail.report.limit_reached, Some(LimitReached::MaxRounds));
    assert_eq!(fail.report.rounds, 3, "{}", fail.report);
    assert!(!fail.report.downtime_target_missed);
}

#[test]
fn max_rounds_with_force_switches_over_and_reports_the_missed_target() {
    let (mut vm, mut opts) = never_converges();
    opts.limits = rounds(3);
    opts.on_timeout = OnTimeout::Force;
    let factory = FakeFactory::default();
    let (res, d) = run_with(&mut vm, opts, &factory);
    let r = check_success(&vm, res, d, &factory);
    assert_eq!(r.rounds, 4, "three pre-copy rounds and the switchover: {r}");
    assert_eq!(r.limit_reached, Some(LimitReached::MaxRounds));
    assert!(r.downtime_target_missed, "{r}");
    let text = r.to_string();
    assert!(
        text.contains("ABOVE") && text.contains("switchover forced"),
        "{text}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["downtime_target_missed"], true);
    assert_eq!(json["limit_reached"], "max-rounds");
}

#[test]
fn the_strategys_own_limits_apply_when_the_operator_gives_none() {
    let (mut vm, mut opts) = never_converges();
    opts.strategy = Box::new(DowntimeTarget {
        params: DowntimeParams {
            max_rounds: 2,
            max_time: Duration::from_secs(60),
        },
    });
    opts.on_timeout = OnTimeout::Abort;
    let factory = FakeFactory::default();
    let (res, _) = run_with(&mut vm, opts, &factory);
    assert_rolled_back(&vm, &res, &factory);
    assert_eq!(res.unwrap_err().report.rounds, 2);
}

/// 8 MiB of data behind an 8 Mbit/s cap: the first round would take
/// seconds, far beyond a 300 ms time limit.
fn slow_first_round(on_timeout: OnTimeout) -> (FakeVm, SourceOptions) {
    let mut spec = FakeSpec::new(32);
    spec.writes_per_sec = 200;
    let vm = FakeVm::new(spec).unwrap();
    let mut opts = source_opts("downtime");
    opts.max_bandwidth = Some(Bandwidth::parse("8Mbit").unwrap());
    opts.limits = Limits {
        max_rounds: None,
        max_time: Some(Duration::from_millis(300)),
    };
    opts.on_timeout = on_timeout;
    (vm, opts)
}

#[test]
fn a_timeout_with_abort_stops_in_the_middle_of_a_round() {
    let (mut vm, opts) = slow_first_round(OnTimeout::Abort);
    let factory = FakeFactory::default();
    let (res, _) = run_with(&mut vm, opts, &factory);
    let msg = assert_rolled_back(&vm, &res, &factory);
    assert!(msg.contains("time limit") && msg.contains("300ms"), "{msg}");
    let r = res.unwrap_err().report;
    assert_eq!(r.limit_reached, Some(LimitReached::Timeout));
    assert_eq!(r.rounds, 1, "{r}");
    assert!(r.per_round[0].interrupted, "{r}");
}

#[test]
fn a_timeout_with_force_cuts_the_round_and_the_switchover_sends_the_rest() {
    let (mut vm, opts) = slow_first_round(OnTimeout::Force);
    let factory = FakeFactory::default();
    let (res, d) = run_with(&mut vm, opts, &factory);
    // check_success compares both memories: nothing the cut round left was lost.
    let r = check_success(&vm, res, d, &factory);
    assert_eq!(r.limit_reached, Some(LimitReached::Timeout));
    assert_eq!(r.rounds, 2, "{r}");
    let first = &r.per_round[0];
    assert!(!first.stop_and_copy && first.pages_skipped > 0, "{r}");
}

#[test]
fn impossible_limits_and_unknown_actions_are_refused() {
    assert!(rounds(0).check().is_err());
    assert!(rounds(MAX_ROUNDS + 1).check().is_err());
    let e = "pray".parse::<OnTimeout>().unwrap_err().to_string();
    assert!(e.contains("unknown on-timeout action"), "{e}");
    assert_eq!("postcopy".parse::<OnTimeout>(), Ok(OnTimeout::Postcopy));
    assert_eq!(
        "auto-converge".parse::<OnTimeout>(),
        Ok(OnTimeout::AutoConverge)
    );
}

#[test]
fn max_rounds_with_auto_converge_throttles_in_qemus_steps_then_switches_over() {
    let (mut vm, mut opts) = never_converges();
    opts.limits = rounds(2);
    opts.on_timeout = OnTimeout::AutoConverge;
    let factory = FakeFactory::default();
    let (res, d) = run_with(&mut vm, opts, &factory);
    let r = check_success(&vm, res, d, &factory);
    assert_eq!(r.limit_reached, Some(LimitReached::MaxRounds), "{r}");
    let pre: Vec<f64> = r
        .per_round
        .iter()
        .filter(|x| !x.stop_and_copy)
        .map(|x| x.throttle_pct)
        .collect();
    // Two rounds free, then 20 %, +10 % a round, 99 % at most.
    assert_eq!(&pre[..2], &[0.0, 0.0], "{r}");
    let mut want = 20.0;
    for t in &pre[2..] {
        assert!((t - want).abs() < 1e-9, "{pre:?}");
        want = f64::min(want + 10.0, 99.0);
    }
    assert!(pre.len() > 2, "{r}");
    // The switchover runs unthrottled, and so does whatever runs next.
    assert_eq!(r.per_round.last().unwrap().throttle_pct, 0.0, "{r}");
}
