//! The pool view built from reports: what goes in, and what is left out
//! with its reason.

use std::collections::BTreeMap;

use agent::{HostReport, VmReport};
use manager::{Monitor, ViewSettings};

fn vm(name: &str, state: &str, load: f64) -> VmReport {
    VmReport {
        name: name.into(),
        pid: 1,
        state: state.into(),
        vcpus: 2,
        memory_bytes: 256 << 20,
        resident_bytes: 0,
        cpu_seconds: 0.0,
        load_cpus: Some(load),
        guest: None,
        dirty_rate_bytes_per_second: Some(2_000_000),
    }
}

fn kv(key: &str, value: Vec<u8>, rev: i64) -> store::KeyValue {
    store::KeyValue {
        key: key.into(),
        value,
        create_revision: 1,
        mod_revision: rev,
        version: 1,
        lease: None,
    }
}

fn report(host: &str, load: f64, vms: Vec<VmReport>, rev: i64) -> store::KeyValue {
    let r = HostReport {
        host: host.into(),
        unix_ms: 0,
        interval_ms: 1000,
        capacity_cpus: 2.0,
        cpu_seconds: 0.0,
        load_cpus: Some(load),
        throttled_periods: 0,
        memory_bytes: Some(2048 << 20),
        switched_off: false,
        vms,
    };
    kv(&agent::host_key(host), serde_json::to_vec(&r).unwrap(), rev)
}

const SETTINGS: ViewSettings = ViewSettings {
    interval_s: 1.0,
    host_ram_mb: 4096.0,
    bandwidth_mbps: 1000.0,
};

#[test]
fn reports_become_a_view_and_bad_ones_are_left_out_with_why() {
    let mut m = Monitor::default();
    let kvs = vec![
        report(
            "h1",
            1.5,
            vec![vm("a", "running", 1.0), vm("b", "incoming", 0.0)],
            10,
        ),
        report("h2", 0.6, vec![vm("b", "running", 0.5)], 11),
        report("h3", 9.0, vec![], 12),
        kv("/ferry/hosts/h4", b"{bad".to_vec(), 13),
        report("h5", 0.1, vec![vm("a", "running", 0.1)], 14),
    ];
    let pool = m.build(&kvs, &BTreeMap::new(), &SETTINGS, 0.0, 0);
    assert_eq!(pool.hosts, ["h1", "h2", "h5"]);
    // a is on two hosts: left out; b counts only where it runs.
    assert_eq!(pool.vms, ["b"]);
    let b = &pool.view.vms[0];
    assert_eq!((b.host, b.cpu_size, b.cores), (1, 2.0, 2));
    assert_eq!(b.history, [0.25]);
    assert_eq!(b.ram_mb, 256.0);
    assert_eq!(b.dirty_rate_mb_s, Some(2.0));
    // Memory as the agents report it.
    assert_eq!(pool.view.hosts[0].ram_mb, 2048.0);
    // h2's load beyond its VM's is its overhead.
    assert!((pool.view.hosts[1].cpu_overhead - 0.1).abs() < 1e-9);
    let skipped = pool.skipped.join("\n");
    for why in [
        "host h3: impossible load 9",
        "host h4: malformed report",
        "VM a: reported by hosts h1 and h5",
    ] {
        assert!(skipped.contains(why), "{why}: {skipped}");
    }
    pool.view.validate().unwrap();
}

#[test]
fn a_report_that_stops_changing_goes_stale() {
    let mut m = Monitor::default();
    let kvs = vec![report("h1", 0.5, vec![vm("a", "running", 0.5)], 7)];
    for _ in 0..3 {
        let pool = m.build(&kvs, &BTreeMap::new(), &SETTINGS, 0.0, 0);
        assert_eq!(pool.hosts, ["h1"]);
    }
    let pool = m.build(&kvs, &BTreeMap::new(), &SETTINGS, 0.0, 0);
    assert!(pool.hosts.is_empty());
    assert!(pool.skipped[0].contains("stale"), "{:?}", pool.skipped);
    // A new report brings it back; one sample per report in the history.
    let kvs = vec![report("h1", 0.5, vec![vm("a", "running", 1.0)], 8)];
    let pool = m.build(&kvs, &BTreeMap::new(), &SETTINGS, 0.0, 0);
    assert_eq!(pool.view.vms[0].history, [0.25, 0.5]);
}

#[test]
fn a_switched_off_host_is_off_in_the_view() {
    let mut m = Monitor::default();
    let mut off = report("h2", 0.0, vec![], 5);
    let mut r: HostReport = serde_json::from_slice(&off.value).unwrap();
    r.switched_off = true;
    off.value = serde_json::to_vec(&r).unwrap();
    let kvs = vec![report("h1", 0.5, vec![vm("a", "running", 0.5)], 4), off];
    let pool = m.build(&kvs, &BTreeMap::new(), &SETTINGS, 0.0, 0);
    assert_eq!(pool.hosts, ["h1", "h2"]);
    assert!(pool.view.hosts[0].on);
    assert!(!pool.view.hosts[1].on);
    // A report from before power orders existed reads as on.
    let old: HostReport = serde_json::from_str(
        r#"{"host":"h3","unix_ms":0,"interval_ms":1000,"capacity_cpus":1.0,"cpu_seconds":0.0,"load_cpus":null,"throttled_periods":0,"vms":[]}"#,
    )
    .unwrap();
    assert!(!old.switched_off);
}
