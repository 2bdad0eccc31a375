//! `ferry manager` on real processes against a real etcd on free loopback
//! ports, with the agents' side played by the test: the leader orders the
//! one move that relieves a hotspot and logs why; a failed order is not
//! retried before its cooldown; bad reports are left out with a reason;
//! when the leader is killed the standby takes over and issues no order
//! twice; with etcd down it stops deciding and says so, and leads again
//! when etcd is back; an order to a host whose agent is lost is
//! abandoned, and old orders are removed.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agent::{HostReport, SideReport, Stage, VmReport};
use testkit::{Etcd, TempDir, wait_for};

use crate::harness::{Cleanup, FERRY, LIMIT, events};

/// `ferry manager` NAME on `etcd`, deciding every 200 ms: balance, THR
/// 0.8, one migration per host, a 10-minute cooldown; its decision log is
/// `dir`/NAME.jsonl.
fn manager(etcd: &Etcd, dir: &TempDir, name: &str) -> Child {
    manager_with(etcd, dir, name, "balance")
}

fn manager_with(etcd: &Etcd, dir: &TempDir, name: &str, pattern: &str) -> Child {
    Command::new(FERRY)
        .args(["manager", "--name", name, "--etcd", &etcd.endpoint()])
        .args(["--interval", "200ms", "--lease-ttl", "2s"])
        .args([
            "--pattern",
            pattern,
            "--detector",
            "thr",
            "--detector-param",
            "0.8",
        ])
        .args(["--per-host", "1", "--cooldown", "10m"])
        .arg("--decision-log")
        .arg(dir.join(format!("{name}.jsonl")))
        .arg("--log-file")
        .arg(dir.join(format!("{name}.log")))
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// A client of `etcd`.
fn connect(etcd: &Etcd) -> store::Store {
    store::Store::connect(&store::StoreConfig::Etcd(store::EtcdConfig::new(vec![
        etcd.endpoint(),
    ])))
    .unwrap()
}

fn host(name: &str, load: f64, vms: Vec<VmReport>) -> HostReport {
    HostReport {
        host: name.into(),
        unix_ms: 0,
        interval_ms: 200,
        capacity_cpus: 1.0,
        cpu_seconds: 0.0,
        load_cpus: Some(load),
        throttled_periods: 0,
        memory_bytes: None,
        switched_off: false,
        vms,
    }
}

fn vm(name: &str, load: f64) -> VmReport {
    VmReport {
        name: name.into(),
        pid: 1,
        state: "running".into(),
        vcpus: 1,
        memory_bytes: 64 << 20,
        resident_bytes: 0,
        cpu_seconds: 0.0,
        load_cpus: Some(load),
        guest: None,
        dirty_rate_bytes_per_second: None,
    }
}

/// Publishes a garbled report for h3, then `reports()`, every 100 ms until
/// stopped, as live agents do (a report that stops changing is stale).
fn report_forever(
    store: store::Store,
    stop: Arc<AtomicBool>,
    reports: fn() -> Vec<HostReport>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) && n < 3000 {
            n += 1;
            // First, so that any view with the good reports has it too.
            let _ = store.put(&agent::host_key("h3"), b"{garbage", None);
            for mut r in reports() {
                r.unix_ms = n;
                let _ = store.put(
                    &agent::host_key(&r.host),
                    &serde_json::to_vec(&r).unwrap(),
                    None,
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// An impossible report (h4, first: any view with the others has it), a
/// hotspot (h1) and a light host (h2).
fn hotspot() -> Vec<HostReport> {
    vec![
        host("h4", 7.0, Vec::new()),
        host("h1", 0.95, vec![vm("web", 0.9)]),
        host("h2", 0.05, Vec::new()),
    ]
}

fn orders(store: &store::Store) -> Vec<agent::Order> {
    let kvs = store.list(agent::order::ORDERS_PREFIX).unwrap().kvs;
    let (views, bad) = agent::order::parse_all(&kvs);
    assert!(bad.is_empty(), "{bad:?}");
    views.into_values().filter_map(|v| v.order).collect()
}

#[test]
fn the_leader_orders_a_move_and_a_standby_takes_over_without_repeating_it() {
    let mut etcd = Etcd::start("manager");
    let dir = TempDir::new("ferry-manager");
    let store = connect(&etcd);
    let stop = Arc::new(AtomicBool::new(false));
    let reporter = report_forever(store.clone(), stop.clone(), hotspot);
    let mut managers = Cleanup::default();
    managers.agents.push(manager(&etcd, &dir, "m1"));
    let (log1, log2) = (dir.join("m1.jsonl"), dir.join("m2.jsonl"));
    wait_for("m1 to lead", LIMIT, || {
        (!events(&log1, "leader").is_empty()).then_some(())
    });
    managers.agents.push(manager(&etcd, &dir, "m2"));

    // The hotspot is relieved by one order, with its reason.
    let order = wait_for("an order", LIMIT, || orders(&store).into_iter().next());
    assert_eq!(
        (order.vm.as_str(), order.from.as_str(), order.to.as_str()),
        ("web", "h1", "h2")
    );
    assert_eq!(order.reason, "hotspot");
    let issued = events(&log1, "order");
    assert_eq!(issued.len(), 1, "{issued:?}");
    let why = issued[0]["why"].as_str().unwrap();
    assert!(why.contains("host h1 is a hotspot at 0.95"), "{why}");
    // Bad reports are left out, each with its reason.
    let interval = events(&log1, "interval").pop().unwrap();
    let skipped = interval["skipped"].to_string();
    assert!(skipped.contains("host h3: malformed report"), "{skipped}");
    assert!(skipped.contains("host h4: impossible load 7"), "{skipped}");

    // The source fails the order: reported once, and the VM is not
    // ordered again before its cooldown.
    let failed = SideReport::failed("h1", "test: refused");
    let key = agent::order::side_key(&order.id, agent::Side::Source);
    store
        .put(&key, &serde_json::to_vec(&failed).unwrap(), None)
        .unwrap();
    let ended = wait_for("the end to be logged", LIMIT, || {
        events(&log1, "order-ended").pop()
    });
    assert_eq!(ended["outcome"], serde_json::json!(Stage::Failed));
    assert_eq!(ended["error"], "test: refused");

    // The leader dies: the standby takes over, and orders nothing again.
    let mut m1 = managers.agents.remove(0);
    m1.kill().unwrap();
    m1.wait().unwrap();
    wait_for("m2 to lead", LIMIT, || {
        (!events(&log2, "leader").is_empty()).then_some(())
    });
    wait_for("m2 to decide a few times", LIMIT, || {
        (events(&log2, "interval").len() >= 5).then_some(())
    });
    assert_eq!(orders(&store).len(), 1, "no order issued twice");
    assert!(events(&log2, "order").is_empty());
    let dropped = events(&log2, "move-dropped");
    assert!(
        !dropped.is_empty(),
        "m2 wanted the same move and left it out"
    );
    let why = dropped[0]["why"].as_str().unwrap();
    assert!(why.contains(&order.id), "{why}");
    assert!(
        events(&log2, "order-ended").is_empty(),
        "the end was logged by m1 already"
    );

    // etcd goes down: m2 says it stops deciding; back, m2 leads again.
    etcd.kill();
    wait_for("m2 to say the store is down", LIMIT, || {
        (!events(&log2, "store-unavailable").is_empty()).then_some(())
    });
    etcd.restart();
    wait_for("m2 to lead again", LIMIT, || {
        (events(&log2, "leader").len() >= 2).then_some(())
    });
    let decided = events(&log2, "interval").len();
    wait_for("m2 to decide again", LIMIT, || {
        (events(&log2, "interval").len() >= decided + 3).then_some(())
    });
    assert_eq!(orders(&store).len(), 1, "still no order issued twice");
    stop.store(true, Ordering::SeqCst);
    reporter.join().unwrap();
}

/// Two light hosts and a host already switched off (h5).
fn light() -> Vec<HostReport> {
    let mut off = host("h5", 0.0, Vec::new());
    off.switched_off = true;
    vec![
        host("h1", 0.1, vec![vm("a", 0.1)]),
        host("h2", 0.3, vec![vm("b", 0.3)]),
        off,
    ]
}

#[test]
fn consolidation_switches_the_emptied_host_off() {
    let etcd = Etcd::start("manager-power");
    let dir = TempDir::new("ferry-manager-power");
    let store = connect(&etcd);
    let stop = Arc::new(AtomicBool::new(false));
    let reporter = report_forever(store.clone(), stop.clone(), light);
    let mut managers = Cleanup::default();
    managers
        .agents
        .push(manager_with(&etcd, &dir, "m1", "consolidate"));
    let log = dir.join("m1.jsonl");
    let order = wait_for("an order", LIMIT, || orders(&store).into_iter().next());
    assert_eq!(
        (order.vm.as_str(), order.from.as_str(), order.to.as_str()),
        ("a", "h1", "h2")
    );
    assert_eq!(order.reason, "coldspot");
    let power = wait_for("h1's power order", LIMIT, || {
        store.get(&agent::power_key("h1")).unwrap()
    });
    let power: agent::PowerOrder = serde_json::from_slice(&power.value).unwrap();
    assert_eq!(power.power, agent::Power::Off);
    let off = events(&log, "switch-off");
    assert_eq!(off.len(), 1, "written once: {off:?}");
    assert_eq!(off[0]["host"], "h1");
    // The receiving host is on and h5, off, is not woken for nothing.
    assert!(store.get(&agent::power_key("h2")).unwrap().is_none());
    assert!(store.get(&agent::power_key("h5")).unwrap().is_none());
    stop.store(true, Ordering::SeqCst);
    reporter.join().unwrap();
}

/// Writes `order` (issued `age` ago) and its source's `stage`.
fn put_order(store: &store::Store, id: &str, vm: &str, to: &str, age: Duration, stage: Stage) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let order = agent::Order {
        id: id.into(),
        vm: vm.into(),
        from: "h1".into(),
        to: to.into(),
        reason: "hotspot".into(),
        issued_unix_ms: (now - age).as_millis() as u64,
        migration: agent::OrderMigration::default(),
    };
    let key = agent::order::order_key(id);
    store
        .put(&key, &serde_json::to_vec(&order).unwrap(), None)
        .unwrap();
    let side = SideReport::new("h1", stage);
    let key = agent::order::side_key(id, agent::Side::Source);
    store
        .put(&key, &serde_json::to_vec(&side).unwrap(), None)
        .unwrap();
}

#[test]
fn orders_to_a_lost_host_are_abandoned_and_old_ones_removed() {
    let etcd = Etcd::start("manager-orders");
    let dir = TempDir::new("ferry-manager-orders");
    let store = connect(&etcd);
    let hour = Duration::from_secs(3600);
    // h9 has no agent (no report): its order waits for nobody.
    put_order(
        &store,
        "o-lost",
        "a",
        "h9",
        Duration::ZERO,
        Stage::Migrating,
    );
    put_order(&store, "o-old", "b", "h2", 2 * hour, Stage::Failed);
    put_order(&store, "o-doubt", "c", "h2", 2 * hour, Stage::InDoubt);
    put_order(
        &store,
        "o-recent",
        "d",
        "h2",
        Duration::ZERO,
        Stage::Completed,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let reporter = report_forever(store.clone(), stop.clone(), light);
    let mut managers = Cleanup::default();
    managers.agents.push(manager(&etcd, &dir, "m1"));
    let log = dir.join("m1.jsonl");
    let ended = wait_for("the lost order to end", LIMIT, || {
        events(&log, "order-ended")
            .into_iter()
            .find(|e| e["order"] == "o-lost")
    });
    assert_eq!(ended["outcome"], serde_json::json!(Stage::Abandoned));
    let abandoned = events(&log, "order-abandoned");
    assert_eq!(abandoned.len(), 1, "written once: {abandoned:?}");
    let why = abandoned[0]["why"].as_str().unwrap();
    assert!(why.contains("destination host h9 is lost"), "{why}");
    // An hour's retention: the old failure goes, the order in doubt waits
    // for its operator, the recent one stays.
    let ids: Vec<String> = orders(&store).into_iter().map(|o| o.id).collect();
    assert_eq!(ids, ["o-doubt", "o-lost", "o-recent"]);
    assert!(
        store
            .list(&agent::order::side_key("o-old", agent::Side::Source))
            .unwrap()
            .kvs
            .is_empty(),
        "its reports went with it"
    );
    stop.store(true, Ordering::SeqCst);
    reporter.join().unwrap();
}
