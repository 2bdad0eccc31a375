//! Runs that complete: every strategy, a bandwidth cap, zero pages, the
//! non-zero hint, and the cap spared by the switchover.

use std::time::Duration;

use migrate::fake::{FakeFactory, FakeSpec, FakeVm, WritePattern};
use migrate::*;
use units::Bandwidth;

use crate::harness::*;

/// A guest that writes nothing: hybrid's rounds converge, and the rest is
/// copied in the pause rather than fetched after a switch.
#[test]
fn hybrid_ends_as_pre_copy_when_the_rest_copies_quickly() {
    let mut spec = FakeSpec::new(16);
    spec.writes_per_sec = 0;
    let mut vm = FakeVm::new(spec).unwrap();
    let factory = FakeFactory::default();
    let (res, d) = run(
        &mut vm,
        source_opts("hybrid"),
        factory.clone(),
        dest_opts(1 << 30),
        None,
    );
    let r = check_success(&vm, res, d, &factory);
    assert_eq!(r.strategy, "hybrid");
    assert!(r.postcopy.is_none(), "{r}");
    assert!(r.per_round.last().is_some_and(|p| p.stop_and_copy), "{r}");
}

#[test]
fn every_strategy_converges_to_an_identical_copy() {
    for name in STRATEGIES {
        let mut vm = FakeVm::new(busy_spec(32)).unwrap();
        assert!(vm.wait_for_writes(100, Duration::from_secs(5)));
        let factory = FakeFactory::default();
        let opts = match *name {
            "hybrid" => switching_hybrid_opts(),
            _ => source_opts(name),
        };
        let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
        let r = check_success(&vm, res, d, &factory);
        // At least the prefilled quarter of memory went over.
        assert!(data_pages(&r) >= 32 * 256 / 4, "{name}: {r}");
        assert_eq!(r.postcopy.is_some(), ["postcopy", "hybrid"].contains(name));
        if ["stop-and-copy", "postcopy"].contains(name) {
            assert_eq!(r.rounds, 1, "{r}");
        } else {
            assert!(r.rounds >= 2, "{name}: {r}");
        }
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["strategy"], *name);
        assert_eq!(json["outcome"], "completed");
    }
}

#[test]
fn bandwidth_cap_and_zero_pages() {
    // 8 MiB, 2 regions, mostly zero, a cap: the cap is honoured on average and
    // zero pages never travel as data.
    let mut spec = FakeSpec::new(8);
    spec.regions = vec![(0, 4 * MIB), (1 << 32, 4 * MIB)];
    spec.prefill_pages = 300;
    spec.working_set_pages = 64;
    spec.writes_per_sec = 500;
    spec.pattern = WritePattern::HotSet {
        hot_fraction: 0.1,
        hot_share: 0.9,
    };
    let mut vm = FakeVm::new(spec).unwrap();
    let factory = FakeFactory::default();
    let mut opts = source_opts("downtime");
    opts.max_bandwidth = Some(Bandwidth::parse("40Mbit").unwrap());
    let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
    let r = check_success(&vm, res, d, &factory);
    let first = &r.per_round[0];
    assert_eq!(first.pages_pending, 2048);
    assert!(first.zero_pages >= 2048 - 300 - 64, "{r}");
    assert!(r.pages_sent < 2048, "{r}");
    assert!(
        r.bytes_sent < 2048 * 4096,
        "zero pages must not be sent as data: {r}"
    );
    // Throughput over the whole run cannot exceed the cap by more than one burst.
    let secs: f64 = r.per_round.iter().map(|x| x.duration_ms).sum::<f64>() / 1000.0;
    assert!(
        (r.bytes_sent as f64) <= 5e6 * secs + 256.0 * 1024.0 + 65536.0,
        "cap exceeded: {r}"
    );
}

#[test]
fn an_initially_all_dirty_log_does_not_resend_memory() {
    let mut spec = busy_spec(16);
    spec.initially_all_dirty = true;
    let mut vm = FakeVm::new(spec).unwrap();
    let factory = FakeFactory::default();
    let (res, d) = run_default(&mut vm, "xen", &factory);
    let r = check_success(&vm, res, d, &factory);
    // Only what the guest wrote (its 1024-page working set) is pending after round 1.
    assert!(r.per_round[1].pages_pending <= 1024, "{r}");
}

#[test]
fn nonzero_hint_skips_untouched_pages() {
    let mut spec = FakeSpec::new(16);
    spec.nonzero_hint = true;
    spec.writes_per_sec = 1000;
    let mut vm = FakeVm::new(spec).unwrap();
    let factory = FakeFactory::default();
    let (res, d) = run_default(&mut vm, "xen", &factory);
    let r = check_success(&vm, res, d, &factory);
    assert!(r.per_round[0].zero_pages >= 16 * 256 * 3 / 4 - 512, "{r}");
}

#[test]
fn the_background_cap_spares_the_switchover_but_a_link_does_not() {
    let run_with = |max: Option<&str>, link: Option<&str>| {
        let mut spec = busy_spec(8);
        spec.prefill_pages = 500;
        let mut vm = FakeVm::new(spec).unwrap();
        let factory = FakeFactory::default();
        let mut opts = source_opts("downtime");
        opts.max_bandwidth = max.map(|b| Bandwidth::parse(b).unwrap());
        opts.link_bandwidth = link.map(|b| Bandwidth::parse(b).unwrap());
        let (res, d) = run(&mut vm, opts, factory.clone(), dest_opts(1 << 30), None);
        check_success(&vm, res, d, &factory)
    };
    let r = run_with(Some("400Mbit"), None);
    let (live, paused) = r.per_round.split_at(r.per_round.len() - 1);
    assert!(
        live.iter().all(|x| x.rate_limit_bps == Some(400_000_000)),
        "{r}"
    );
    assert!(
        paused[0].stop_and_copy && paused[0].rate_limit_bps.is_none(),
        "{r}"
    );
    let r = run_with(Some("400Mbit"), Some("200Mbit"));
    assert!(
        r.per_round
            .iter()
            .all(|x| x.rate_limit_bps == Some(200_000_000)),
        "{r}"
    );
    assert_eq!(r.link_bandwidth_bps, Some(200_000_000));
}
