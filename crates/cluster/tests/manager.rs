//! The engine on small hand-made clusters whose right answer is known.

use cluster::*;

const CAP: f64 = 2000.0;

fn host(id: u64, on: bool, model: usize) -> HostInfo {
    HostInfo {
        id,
        cpu_capacity: CAP,
        core_capacity: CAP,
        ram_mb: 4096.0,
        net_mbps: 1000.0,
        cpu_overhead: 0.0,
        power_model: model,
        on,
    }
}

fn vm(id: u64, host: usize, demand: f64, ram: f64) -> VmInfo {
    VmInfo {
        id,
        host,
        cpu_size: 1000.0,
        cores: 1,
        cpu_demand: demand,
        ram_mb: ram,
        net_mbps: 0.0,
        history: vec![demand / 1000.0],
        migrating_to: None,
        dirty_rate_mb_s: None,
    }
}

fn pool(hosts: Vec<HostInfo>, vms: Vec<VmInfo>) -> PoolView {
    PoolView {
        time_s: 0.0,
        interval_s: 300.0,
        migration_bw_share: 0.5,
        default_bandwidth_mbps: 1000.0,
        power_models: vec![PowerModel::hp_ml110_g4(), PowerModel::hp_ml110_g5()],
        hosts,
        vms,
    }
}

fn config(detector: Detector, selector: Selector, pattern: Pattern) -> Config {
    Config {
        detector,
        selector,
        pattern,
        coldspot_below: None,
        limits: MigrationLimits::default(),
        model: cluster::Model::Ferry,
        tie_tolerance_w: 0.0,
    }
}

fn thr(t: f64) -> Detector {
    Detector::Threshold { threshold: t }
}

fn moves(p: &Plan) -> Vec<(u64, usize, usize, Reason)> {
    p.migrations
        .iter()
        .map(|d| (d.vm_id, d.from, d.to, d.reason))
        .collect()
}

#[test]
fn hotspot_moves_smallest_memory_vm_to_least_power_increase() {
    // Host 0 at 0.85 (> 0.8): MMT picks VM 2 (613 MB). Hosts 1 (G4) and 2 (G5)
    // both run a VM at 0.25; adding 300 MIPS (0.15) costs
    // G4: P(0.4)-P(0.25) = 99.5-94.3 = 5.2 W, G5: P(0.4)-P(0.25) = 110-103 = 7 W.
    let s = pool(
        vec![host(0, true, 0), host(1, true, 0), host(2, true, 1)],
        vec![
            vm(1, 0, 1400.0, 1740.0),
            vm(2, 0, 300.0, 613.0),
            vm(3, 1, 500.0, 870.0),
            vm(4, 2, 500.0, 870.0),
        ],
    );
    let mut m = Manager::new(
        config(thr(0.8), Selector::MinMigrationTime, Pattern::Balance),
        1,
    )
    .unwrap();
    // Balance mode places least-loaded: both at 0.25 -> first (host 1).
    let p = m.decide(&s).unwrap();
    assert_eq!(p.hotspots, vec![0]);
    assert_eq!(moves(&p), vec![(2, 0, 1, Reason::Hotspot)]);

    let mut m = Manager::new(
        config(thr(0.8), Selector::MinUtilization, Pattern::Consolidate),
        1,
    )
    .unwrap();
    let p = m.decide(&s).unwrap();
    // MU also picks VM 2 (0.3 < 1.4 of its size); power-aware picks G4 host 1.
    // Then consolidation: host 1 received a VM so it is not a coldspot, but it
    // may still receive (as in CloudSim); host 2 (0.25) is emptied onto it
    // (0.4 -> 0.65 < 0.8) and switched off.
    assert_eq!(
        moves(&p),
        vec![(2, 0, 1, Reason::Hotspot), (4, 2, 1, Reason::Coldspot)]
    );
    assert_eq!(p.switch_off, vec![2]);
}

#[test]
fn least_loaded_and_power_aware_choose_differently() {
    // Host 0 is a hotspot (0.9 > 0.8); MMT moves VM 2 (300 MIPS, 0.15).
    // Power-aware: G4 host 2 at 0.3 -> 0.45 costs 100.75 - 96 = 4.75 W, G5
    // host 1 at 0.1 -> 0.25 costs 103 - 97 = 6 W: host 2. Least loaded:
    // host 1 ends at 0.25, host 2 at 0.45: host 1.
    let s = pool(
        vec![host(0, true, 0), host(1, true, 1), host(2, true, 0)],
        vec![
            vm(1, 0, 1500.0, 1740.0),
            vm(2, 0, 300.0, 613.0),
            vm(3, 1, 200.0, 870.0),
            vm(4, 2, 600.0, 870.0),
        ],
    );
    let mut c = config(thr(0.8), Selector::MinMigrationTime, Pattern::Consolidate);
    c.coldspot_below = Some(0.0); // no coldspot phase
    let p = Manager::new(c.clone(), 1).unwrap().decide(&s).unwrap();
    assert_eq!(moves(&p), vec![(2, 0, 2, Reason::Hotspot)]);
    c.pattern = Pattern::Balance;
    let p = Manager::new(c, 1).unwrap().decide(&s).unwrap();
    assert_eq!(moves(&p), vec![(2, 0, 1, Reason::Hotspot)]);
    assert_eq!(p.mode, Mode::Balance);
    assert!(p.switch_off.is_empty());
}

#[test]
fn measured_host_overhead_counts_towards_hotspots() {
    let mut s = pool(
        vec![host(0, true, 0), host(1, true, 0)],
        vec![
            vm(1, 0, 1000.0, 870.0),
            vm(2, 0, 400.0, 613.0),
            vm(3, 1, 1200.0, 870.0),
        ],
    );
    let mut c = config(thr(0.8), Selector::MinMigrationTime, Pattern::Balance);
    c.coldspot_below = Some(0.0);
    // VMs alone: 0.7, not a hotspot.
    let p = Manager::new(c.clone(), 1).unwrap().decide(&s).unwrap();
    assert!(p.hotspots.is_empty());
    // Plus 300 MIPS of hypervisor work: 0.85 > 0.8.
    s.hosts[0].cpu_overhead = 300.0;
    let p = Manager::new(c.clone(), 1).unwrap().decide(&s).unwrap();
    assert_eq!(p.hotspots, vec![0]);
    // MMT moves VM 2 (host 0 drops to 0.65) to host 1 (0.6 + 0.2 = 0.8 is fine)...
    assert_eq!(moves(&p), vec![(2, 0, 1, Reason::Hotspot)]);
    // ...unless host 1's own overhead makes it too full: nowhere to go.
    s.hosts[1].cpu_overhead = 100.0;
    let p = Manager::new(c, 1).unwrap().decide(&s).unwrap();
    assert!(p.migrations.is_empty());
}

#[test]
fn memory_and_cores_limit_placement() {
    // Host 1 has CPU to spare but only 500 MB free: VM 2 (613 MB) goes to
    // the off host 2 instead.
    let mut s = pool(
        vec![host(0, true, 0), host(1, true, 0), host(2, false, 0)],
        vec![
            vm(1, 0, 1100.0, 1740.0),
            vm(2, 0, 700.0, 613.0),
            vm(3, 1, 200.0, 3596.0),
        ],
    );
    let c = config(thr(0.8), Selector::MinMigrationTime, Pattern::Balance);
    let p = Manager::new(c.clone(), 1).unwrap().decide(&s).unwrap();
    assert_eq!(moves(&p), vec![(2, 0, 2, Reason::Hotspot)]);
    // A VM asking more than one core gives: hosts with 600-MIPS cores refuse it.
    for h in s.hosts.iter_mut().skip(1) {
        h.core_capacity = 600.0;
        h.ram_mb = 8192.0;
    }
    let p = Manager::new(c, 1).unwrap().decide(&s).unwrap();
    assert!(p.migrations.is_empty(), "{:?}", p.migrations);
}

#[test]
fn never_places_on_a_host_that_would_become_overloaded() {
    // Host 1 at 0.7: +0.35 would make it 1.05 > 0.8. Host 2 is off: it is
    // woken and listed in switch_on.
    let s = pool(
        vec![host(0, true, 0), host(1, true, 0), host(2, false, 0)],
        vec![
            vm(1, 0, 1100.0, 1740.0),
            vm(2, 0, 700.0, 613.0),
            vm(3, 1, 1400.0, 870.0),
        ],
    );
    let mut m = Manager::new(
        config(thr(0.8), Selector::MinMigrationTime, Pattern::Consolidate),
        1,
    )
    .unwrap();
    let p = m.decide(&s).unwrap();
    assert_eq!(moves(&p)[0], (2, 0, 2, Reason::Hotspot));
    assert_eq!(p.switch_on, vec![2]);
}

#[test]
fn coldspot_is_emptied_and_switched_off_all_or_nothing() {
    // Host 2 (0.1) is the least loaded: its VM goes to the host whose power
    // grows least (host 0 at 0.3 -> 0.4: G4 99.5-96 = 3.5 W; host 1 G5 at 0.5 ->
    // 0.6: 121-116 = 5 W). Then host 1 (0.5) is tried but host 0 received a VM
    // and host 2 is being emptied: nothing else. Host 3 is on and empty: off.
    let s = pool(
        vec![
            host(0, true, 0),
            host(1, true, 1),
            host(2, true, 0),
            host(3, true, 0),
        ],
        vec![
            vm(1, 0, 600.0, 870.0),
            vm(2, 1, 1000.0, 870.0),
            vm(3, 2, 200.0, 613.0),
        ],
    );
    let mut m = Manager::new(
        config(thr(0.8), Selector::MinMigrationTime, Pattern::Consolidate),
        1,
    )
    .unwrap();
    let p = m.decide(&s).unwrap();
    assert_eq!(moves(&p), vec![(3, 2, 0, Reason::Coldspot)]);
    assert_eq!(p.switch_off, vec![2, 3]);

    // All or nothing: host 0 holds two VMs and only one fits on host 1.
    let s = pool(
        vec![host(0, true, 0), host(1, true, 0)],
        vec![
            vm(1, 0, 300.0, 870.0),
            vm(2, 0, 300.0, 870.0),
            vm(3, 1, 1100.0, 870.0),
        ],
    );
    let p = Manager::new(
        config(thr(0.8), Selector::MinMigrationTime, Pattern::Consolidate),
        1,
    )
    .unwrap()
    .decide(&s)
    .unwrap();
    // Host 0 (0.3): VM 1 to host 1 makes 0.7, VM 2 would make 0.85 > 0.8: cancelled.
    // Host 1 (0.55) then: its VM would make host 0 0.85: cancelled too.
    assert!(p.migrations.is_empty(), "{:?}", p.migrations);
    assert!(p.switch_off.is_empty());
}

#[test]
fn coldspot_threshold_limits_candidates() {
    let s = pool(
        vec![host(0, true, 0), host(1, true, 0)],
        vec![vm(1, 0, 400.0, 870.0), vm(2, 1, 600.0, 870.0)],
    );
    let mut c = config(thr(0.8), Selector::MinMigrationTime, Pattern::Consolidate);
    c.coldspot_below = Some(0.1);
    let p = Manager::new(c.clone(), 1).unwrap().decide(&s).unwrap();
    assert!(p.migrations.is_empty());
    c.coldspot_below = Some(0.25);
    let p = Manager::new(c, 1).unwrap().decide(&s).unwrap();
    assert_eq!(moves(&p), vec![(1, 0, 1, Reason::Coldspot)]);
}

#[test]
fn limits_cap_migrations_and_cooldown_stops_ping_pong() {
    // Host 0 at 1.2 needs two VMs out to drop below 0.5.
    let hosts = vec![host(0, true, 0), host(1, true, 0), host(2, true, 0)];
    let vms = vec![
        vm(1, 0, 800.0, 613.0),
        vm(2, 0, 800.0, 700.0),
        vm(3, 0, 800.0, 800.0),
        vm(4, 1, 100.0, 870.0),
        vm(5, 2, 100.0, 870.0),
    ];
    let s = pool(hosts, vms);
    let c = config(thr(0.5), Selector::MinMigrationTime, Pattern::Balance);
    let p = Manager::new(c.clone(), 1).unwrap().decide(&s).unwrap();
    assert_eq!(p.migrations.len(), 2);
    let mut limited = c.clone();
    limited.limits.per_host = Some(1);
    let p = Manager::new(limited, 1).unwrap().decide(&s).unwrap();
    assert_eq!(moves(&p), vec![(1, 0, 1, Reason::Hotspot)]);
    let mut limited = c.clone();
    limited.limits.per_cluster = Some(1);
    let p = Manager::new(limited, 1).unwrap().decide(&s).unwrap();
    assert_eq!(p.migrations.len(), 1);

    // Cooldown: VM 1 moved at t=0 to host 1; at t=300 host 1 is a hotspot,
    // but VM 1 may not move back before 600 s; VM 4 goes instead.
    let mut c2 = config(thr(0.5), Selector::MinMigrationTime, Pattern::Balance);
    c2.limits.vm_cooldown_s = 600.0;
    let mut m = Manager::new(c2, 1).unwrap();
    let p = m.decide(&s).unwrap();
    assert_eq!(p.migrations[0].vm_id, 1);
    let mut s2 = pool(
        vec![host(0, true, 0), host(1, true, 0), host(2, true, 0)],
        vec![
            vm(1, 1, 800.0, 613.0),
            vm(4, 1, 300.0, 870.0),
            vm(5, 2, 100.0, 870.0),
        ],
    );
    s2.time_s = 300.0;
    let p = m.decide(&s2).unwrap();
    assert_eq!(moves(&p), vec![(4, 1, 0, Reason::Hotspot)]);
    s2.time_s = 600.0;
    let mut m2 = m.clone();
    let p = m2.decide(&s2).unwrap();
    assert_eq!(p.migrations[0].vm_id, 1);
}

/// A VM's cooldown can scale with its own migration time: VM 1 (613 MB
/// over 62.5 MB/s: 9.808 s) with 50 migration times may not move back
/// before 490.4 s.
#[test]
fn cooldown_scales_with_the_migration_time() {
    let s = pool(
        vec![host(0, true, 0), host(1, true, 0), host(2, true, 0)],
        vec![
            vm(1, 0, 800.0, 613.0),
            vm(2, 0, 800.0, 700.0),
            vm(3, 0, 800.0, 800.0),
            vm(4, 1, 100.0, 870.0),
            vm(5, 2, 100.0, 870.0),
        ],
    );
    let mut c = config(thr(0.5), Selector::MinMigrationTime, Pattern::Balance);
    c.limits.vm_cooldown_migrations = 50.0;
    let mut m = Manager::new(c, 1).unwrap();
    assert_eq!(m.decide(&s).unwrap().migrations[0].vm_id, 1);
    let mut s2 = pool(
        vec![host(0, true, 0), host(1, true, 0), host(2, true, 0)],
        vec![
            vm(1, 1, 800.0, 613.0),
            vm(4, 1, 300.0, 870.0),
            vm(5, 2, 100.0, 870.0),
        ],
    );
    s2.time_s = 490.0;
    let p = m.clone().decide(&s2).unwrap();
    assert_eq!(p.migrations[0].vm_id, 4);
    s2.time_s = 490.5;
    let p = m.decide(&s2).unwrap();
    assert_eq!(p.migrations[0].vm_id, 1);
}

#[test]
fn in_flight_migrations_count_against_limits_and_capacity() {
    let mut v1 = vm(1, 0, 900.0, 613.0);
    v1.migrating_to = Some(1);
    let s = pool(
        vec![host(0, true, 0), host(1, true, 0)],
        vec![v1, vm(2, 0, 900.0, 870.0), vm(3, 1, 100.0, 870.0)],
    );
    let mut c = config(thr(0.8), Selector::MinMigrationTime, Pattern::Balance);
    c.limits.per_host = Some(1);
    let p = Manager::new(c, 1).unwrap().decide(&s).unwrap();
    // Host 0 is at 0.9 but already migrating: the limit of 1 blocks more.
    assert!(p.migrations.is_empty());
}

#[test]
fn auto_pattern_switches_with_hysteresis() {
    let pattern = Pattern::Auto {
        consolidate_below: 0.3,
        balance_above: 0.6,
        dwell: 2,
    };
    let mut m = Manager::new(config(thr(0.8), Selector::MinMigrationTime, pattern), 1).unwrap();
    let busy = pool(
        vec![host(0, true, 0), host(1, true, 0)],
        vec![
            vm(1, 0, 1000.0, 870.0),
            vm(2, 0, 800.0, 870.0),
            vm(3, 1, 900.0, 870.0),
        ],
    );
    let idle = pool(
        vec![host(0, true, 0), host(1, true, 0)],
        vec![vm(1, 0, 100.0, 870.0), vm(3, 1, 100.0, 870.0)],
    );
    assert_eq!(m.decide(&busy).unwrap().mode, Mode::Consolidate);
    assert_eq!(m.decide(&idle).unwrap().mode, Mode::Consolidate);
    assert_eq!(m.decide(&busy).unwrap().mode, Mode::Consolidate);
    assert_eq!(m.decide(&busy).unwrap().mode, Mode::Balance);
    assert_eq!(m.decide(&idle).unwrap().mode, Mode::Balance);
    assert_eq!(m.decide(&busy).unwrap().mode, Mode::Balance);
    assert_eq!(m.decide(&idle).unwrap().mode, Mode::Balance);
    let p = m.decide(&idle).unwrap();
    assert_eq!(p.mode, Mode::Consolidate);
    // Consolidating: one of the two hosts is emptied.
    assert_eq!(p.migrations.len(), 1);
    assert_eq!(p.switch_off.len(), 1);
}

/// The auto pattern looks ahead along the load's trend: a pool rising by
/// 10 % of its capacity per interval switches to balance at 50 % load when
/// the threshold is 60 % (one interval ahead), and a falling one returns to
/// consolidation at 32 %, before its load is below the 30 % threshold. The
/// switches are counted.
#[test]
fn auto_pattern_follows_the_load_trend() {
    let pattern = Pattern::Auto {
        consolidate_below: 0.3,
        balance_above: 0.6,
        dwell: 1,
    };
    let mut m = Manager::new(config(thr(0.8), Selector::MinMigrationTime, pattern), 1).unwrap();
    let at = |load: f64| {
        let d = load * 2.0 * CAP / 2.0;
        pool(
            vec![host(0, true, 0), host(1, true, 0)],
            vec![vm(1, 0, d, 870.0), vm(2, 1, d, 870.0)],
        )
    };
    assert_eq!(m.decide(&at(0.3)).unwrap().mode, Mode::Consolidate);
    assert_eq!(m.decide(&at(0.4)).unwrap().mode, Mode::Consolidate);
    assert_eq!(m.decide(&at(0.5)).unwrap().mode, Mode::Balance);
    assert!((m.pool_load() - 0.5).abs() < 1e-12);
    assert_eq!(m.decide(&at(0.5)).unwrap().mode, Mode::Balance);
    // Falling: at 0.35 the six-load window still holds the rise (projects
    // to 0.36); at 0.32 the trend is down and projects to 0.294 < 0.3.
    assert_eq!(m.decide(&at(0.45)).unwrap().mode, Mode::Balance);
    assert_eq!(m.decide(&at(0.35)).unwrap().mode, Mode::Balance);
    assert_eq!(m.decide(&at(0.32)).unwrap().mode, Mode::Consolidate);
    assert_eq!(m.switches(), 2);
}

#[test]
fn bad_pool_view_and_config_are_errors() {
    let mut m = Manager::new(config(thr(0.8), Selector::Random, Pattern::Consolidate), 1).unwrap();
    let s = pool(vec![host(0, true, 0)], vec![vm(1, 3, 10.0, 10.0)]);
    assert!(matches!(
        m.decide(&s),
        Err(ClusterError::InvalidPoolView(_))
    ));
    let mut s = pool(vec![host(0, true, 7)], vec![]);
    assert!(matches!(
        m.decide(&s),
        Err(ClusterError::InvalidPoolView(_))
    ));
    s.hosts[0].power_model = 0;
    s.interval_s = 0.0;
    assert!(matches!(
        m.decide(&s),
        Err(ClusterError::InvalidPoolView(_))
    ));
    let bad = config(
        Detector::Sandpiper {
            threshold: 0.8,
            k: 4,
            n: 3,
        },
        Selector::Random,
        Pattern::Consolidate,
    );
    assert!(matches!(
        Manager::new(bad, 1),
        Err(ClusterError::InvalidConfig(_))
    ));
    let bad = config(
        thr(0.8),
        Selector::Random,
        Pattern::Auto {
            consolidate_below: 0.7,
            balance_above: 0.5,
            dwell: 1,
        },
    );
    assert!(matches!(
        Manager::new(bad, 1),
        Err(ClusterError::InvalidConfig(_))
    ));
}

/// Ferry charges waking a host all of its power; CloudSim's rule charges it
/// P(u) - P(0) and a host with VMs its planned power minus its power before
/// the plan. A 200-MIPS VM leaving a hotspot: host 0 (G4 at 50 %) would grow
/// by P(0.6) - P(0.5) = 4 W, the off host 1 by P(0.1) = 89.4 W for Ferry
/// but by 3.4 W for CloudSim.
#[test]
fn cloudsim_model_charges_an_off_host_only_above_idle() {
    let s = pool(
        vec![host(0, true, 0), host(1, false, 0), host(2, true, 0)],
        vec![
            vm(1, 0, 1000.0, 870.0),
            vm(2, 2, 200.0, 613.0),
            vm(3, 2, 900.0, 870.0),
            vm(4, 2, 700.0, 870.0),
        ],
    );
    let mut c = config(thr(0.8), Selector::MinMigrationTime, Pattern::Consolidate);
    c.coldspot_below = Some(0.0);
    let p = Manager::new(c.clone(), 1).unwrap().decide(&s).unwrap();
    assert_eq!(moves(&p), vec![(2, 2, 0, Reason::Hotspot)]);
    c.model = Model::CloudSim;
    let p = Manager::new(c, 1).unwrap().decide(&s).unwrap();
    assert_eq!(moves(&p), vec![(2, 2, 1, Reason::Hotspot)]);
    assert_eq!(p.switch_on, vec![1]);
}
