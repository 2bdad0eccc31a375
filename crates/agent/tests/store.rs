//! An agent with no VMs, against the embedded store: its report is under
//! its key with its lease, and the metrics carry the host series.

use std::time::Duration;

use agent::{Agent, AgentConfig, HostReport, host_key};
use testkit::TempDir;

fn config(dir: &TempDir, host: &str, store: store::StoreConfig) -> AgentConfig {
    AgentConfig {
        host: host.to_string(),
        state_dir: dir.join("state"),
        capacity_cpus: 0.5,
        memory_bytes: Some(3 << 30),
        interval: Duration::from_millis(200),
        metrics: None,
        store,
        lease_ttl: Duration::from_secs(2),
        ferry: "/nonexistent/ferry".into(),
        vms: Vec::new(),
        secret_file: None,
        tls_dir: None,
        migration_ip: std::net::Ipv4Addr::LOCALHOST.into(),
    }
}

#[test]
fn the_host_report_is_published_under_a_lease() {
    let dir = TempDir::new("agent-store");
    let server = store::EmbeddedServer::start(dir.join("store.sock")).unwrap();
    let host = format!("t-store-{}", std::process::id());
    let agent = Agent::start(config(&dir, &host, server.config())).unwrap();
    let first = agent.tick().unwrap();
    assert_eq!(first.load_cpus, None, "no interval before the first sample");
    std::thread::sleep(Duration::from_millis(100));
    let second = agent.tick().unwrap();
    let load = second.load_cpus.expect("a load over the second interval");
    assert!((0.0..=0.5 + 0.1).contains(&load), "{load}");

    let store = server.store().unwrap();
    let kv = store.get(&host_key(&host)).unwrap().expect("published");
    let report: HostReport = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(report.host, host);
    assert_eq!(report.capacity_cpus, 0.5);
    assert_eq!(report.memory_bytes, Some(3 << 30));
    assert!(report.vms.is_empty());
    let lease = kv.lease.expect("published under a lease");
    assert!(store.lease_ttl(lease).unwrap().is_some());

    let text = agent.metrics_text();
    for series in [
        format!("ferry_host_capacity_cpus{{host=\"{host}\"}} 0.5"),
        format!("ferry_host_vms{{host=\"{host}\"}} 0"),
        format!("ferry_agent_reports_published_total{{host=\"{host}\"}} 2"),
        "ferry_host_load_cpus".to_string(),
        "ferry_host_cpu_seconds_total".to_string(),
    ] {
        assert!(text.contains(&series), "{series} missing:\n{text}");
    }
    // The agent's lease lapses once nobody renews it: the report goes.
    drop(agent);
    testkit::wait_for("the report to expire", Duration::from_secs(10), || {
        store.get(&host_key(&host)).unwrap().is_none().then_some(())
    });
    let _ = hostmon::CpuHierarchy::detect()
        .unwrap()
        .open(&host)
        .unwrap()
        .map(|cg| cg.remove());
}

fn put_order(store: &store::Store, id: &str, from: &str, to: &str) {
    let order = agent::Order {
        id: id.into(),
        vm: "web".into(),
        from: from.into(),
        to: to.into(),
        reason: "test".into(),
        issued_unix_ms: 1,
        migration: agent::OrderMigration::default(),
    };
    let value = serde_json::to_vec(&order).unwrap();
    store
        .put(&agent::order::order_key(id), &value, None)
        .unwrap();
}

fn side(store: &store::Store, id: &str, side: agent::Side) -> Option<agent::SideReport> {
    let kv = store.get(&agent::order::side_key(id, side)).unwrap()?;
    Some(serde_json::from_slice(&kv.value).unwrap())
}

/// Orders an agent cannot carry out fail with why, on its side only; an
/// unreadable order is skipped and nothing is written for it.
#[test]
fn orders_it_cannot_carry_out_fail_with_a_reason() {
    let dir = TempDir::new("agent-orders");
    let server = store::EmbeddedServer::start(dir.join("store.sock")).unwrap();
    let store = server.store().unwrap();
    let host = format!("t-orders-{}", std::process::id());
    put_order(&store, "no-vm", &host, "elsewhere");
    put_order(&store, "no-secret", "elsewhere", &host);
    put_order(&store, "not-mine", "a", "b");
    store
        .put("/ferry/orders/garbage", b"{not json", None)
        .unwrap();
    let agent = Agent::start(config(&dir, &host, server.config())).unwrap();
    agent.tick().unwrap();
    agent.tick().unwrap();
    let src = side(&store, "no-vm", agent::Side::Source).expect("reported");
    assert_eq!(src.stage, agent::Stage::Failed);
    assert!(src.error.unwrap().contains("no VM named web"));
    assert!(side(&store, "no-vm", agent::Side::Destination).is_none());
    let dst = side(&store, "no-secret", agent::Side::Destination).expect("reported");
    assert_eq!(dst.stage, agent::Stage::Failed);
    assert!(dst.error.unwrap().contains("no migration secret"));
    let others = store.list("/ferry/orders/").unwrap().kvs;
    assert_eq!(others.len(), 6, "only this host's two reports were added");
    drop(agent);
    let _ = hostmon::CpuHierarchy::detect()
        .unwrap()
        .open(&host)
        .unwrap()
        .map(|cg| cg.remove());
}

#[test]
fn an_empty_host_switches_off_when_told_refuses_vms_and_switches_on_again() {
    use agent::{Order, Power, PowerOrder, Side, SideReport, Stage, power_key};
    let dir = TempDir::new("agent-power");
    let server = store::EmbeddedServer::start(dir.join("store.sock")).unwrap();
    let host = format!("t-power-{}", std::process::id());
    let agent = Agent::start(config(&dir, &host, server.config())).unwrap();
    let store = server.store().unwrap();
    assert!(!agent.tick().unwrap().switched_off);
    let power = |p: Power| {
        let o = PowerOrder {
            power: p,
            reason: "test".into(),
            issued_unix_ms: 1,
        };
        store
            .put(&power_key(&host), &serde_json::to_vec(&o).unwrap(), None)
            .unwrap();
    };
    power(Power::Off);
    assert!(agent.tick().unwrap().switched_off);
    let kv = store.get(&host_key(&host)).unwrap().unwrap();
    assert!(
        serde_json::from_slice::<HostReport>(&kv.value)
            .unwrap()
            .switched_off
    );
    // Switched off, it takes no VM.
    let order = Order {
        id: "o1".into(),
        vm: "vm1".into(),
        from: "elsewhere".into(),
        to: host.clone(),
        reason: "test".into(),
        issued_unix_ms: 1,
        migration: Default::default(),
    };
    store
        .put(
            &agent::order::order_key("o1"),
            &serde_json::to_vec(&order).unwrap(),
            None,
        )
        .unwrap();
    agent.tick().unwrap();
    let kv = store
        .get(&agent::order::side_key("o1", Side::Destination))
        .unwrap()
        .expect("the destination answered");
    let side: SideReport = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(side.stage, Stage::Failed);
    assert!(side.error.unwrap().contains("switched off"));
    // A garbled power order leaves the host as it was.
    store.put(&power_key(&host), b"{bad", None).unwrap();
    assert!(agent.tick().unwrap().switched_off);
    power(Power::On);
    assert!(!agent.tick().unwrap().switched_off);
    drop(agent);
    let _ = hostmon::CpuHierarchy::detect()
        .unwrap()
        .open(&host)
        .unwrap()
        .map(|cg| cg.remove());
}
