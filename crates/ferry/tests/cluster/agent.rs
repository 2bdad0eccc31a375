//! `ferry agent` on real processes: it starts its VM in the host cgroup,
//! serves the host and VM series on /metrics and publishes its report; a
//! killed agent leaves its VM running, and a restarted one adopts it
//! rather than starting another. Two agents carry out a migration order.

use std::path::Path;
use std::time::Duration;

use testkit::{TempDir, free_port, require_kvm, wait_for};

use crate::harness::*;

/// The metrics once they carry the VM's load (two samples taken).
fn metrics_with_vm(port: u16, host: &str) -> String {
    let labels = [("host", host), ("vm", "web")];
    wait_for("the VM's series on /metrics", LIMIT, || {
        metrics(port).filter(|t| value(t, "ferry_vm_load_cpus", &labels).is_some())
    })
}

#[test]
fn an_agent_runs_its_vm_which_outlives_it_and_is_adopted_again() {
    require_kvm();
    let dir = TempDir::new("ferry-agent");
    let host = format!("t-agent-{}", std::process::id());
    let socket = dir.join("state/vms/web.sock");
    let port = free_port();
    let mut guard = Cleanup {
        hosts: vec![host.clone()],
        sockets: vec![socket.clone()],
        agents: vec![agent(&dir, &host, port, "agent1.log")],
    };
    let text = metrics_with_vm(port, &host);
    let h = [("host", host.as_str())];
    let vm_labels = [("host", host.as_str()), ("vm", "web")];
    for (name, labels, want) in [
        ("ferry_host_capacity_cpus", &h[..], Some(0.5)),
        ("ferry_host_vms", &h[..], Some(1.0)),
        ("ferry_host_load_cpus", &h[..], None),
        ("ferry_host_cpu_seconds_total", &h[..], None),
        ("ferry_vm_memory_bytes", &vm_labels[..], Some(33554432.0)),
        ("ferry_vm_vcpus", &vm_labels[..], Some(1.0)),
        ("ferry_vm_cpu_seconds_total", &vm_labels[..], None),
        ("ferry_vm_resident_memory_bytes", &vm_labels[..], None),
    ] {
        let got = value(&text, name, labels);
        assert!(got.is_some(), "{name} missing:\n{text}");
        if let Some(w) = want {
            assert_eq!(got, Some(w), "{name}");
        }
    }
    assert!(text.contains("# TYPE ferry_host_cpu_seconds_total counter"));
    let vm = ping(&socket).expect("the VM answers");
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", vm.pid)).unwrap();
    assert!(
        cgroups.contains(&format!("/ferry/{host}")),
        "the VM is in the host cgroup: {cgroups}"
    );
    // The report is in the store the agent serves.
    let store = store::Store::connect(&store::StoreConfig::Embedded {
        socket: dir.join("state/store.sock"),
        deadline: Duration::from_secs(2),
    })
    .unwrap();
    let kv = store
        .get(&agent::host_key(&host))
        .unwrap()
        .expect("published");
    let report: agent::HostReport = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(report.vms.len(), 1);
    assert_eq!(
        (report.vms[0].name.as_str(), report.vms[0].pid),
        ("web", vm.pid)
    );

    // Killed: the VM runs on.
    let mut first = guard.agents.pop().unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(
        ping(&socket).map(|p| p.pid),
        Some(vm.pid),
        "the VM outlived its agent"
    );

    // Restarted: the same VM, adopted, not a second one.
    let port = free_port();
    guard.agents.push(agent(&dir, &host, port, "agent2.log"));
    let text = metrics_with_vm(port, &host);
    assert_eq!(value(&text, "ferry_host_vms", &h), Some(1.0), "{text}");
    assert_eq!(ping(&socket).map(|p| p.pid), Some(vm.pid));
    let log = std::fs::read_to_string(dir.join("agent2.log")).unwrap();
    assert!(log.contains("VM adopted"), "{log}");
    assert!(!log.contains("VM started"), "{log}");

    // Stopped by SIGTERM: the agent exits 0 and the VM still runs.
    let mut second = guard.agents.pop().unwrap();
    // SAFETY: plain kill(2) of the agent this test started.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    let status = wait_for("the agent to exit", LIMIT, || second.try_wait().unwrap());
    assert!(status.success(), "{status:?}");
    assert_eq!(ping(&socket).map(|p| p.pid), Some(vm.pid));
}

#[test]
fn two_agents_carry_out_a_migration_order() {
    require_kvm();
    let t = two_hosts("order", "idle,memory=32M", [&[], &[]]);
    let ([h1, h2], store) = (&t.names, &t.store);
    let order = agent::Order {
        id: "o-1".into(),
        vm: "web".into(),
        from: h1.clone(),
        to: h2.clone(),
        reason: "test".into(),
        issued_unix_ms: 0,
        migration: agent::OrderMigration::default(),
    };
    let key = agent::order::order_key(&order.id);
    store
        .put(&key, &serde_json::to_vec(&order).unwrap(), None)
        .unwrap();
    let done = wait_for("the order to end", LIMIT, || {
        side_report(store, "o-1", agent::Side::Source).filter(|r| r.stage.is_final())
    });
    assert_eq!(done.stage, agent::Stage::Completed, "{done:?}");
    assert!(
        done.bytes_sent > 0 && done.total_time_ms.is_some(),
        "{done:?}"
    );
    let dst = wait_for("the destination's word", LIMIT, || {
        side_report(store, "o-1", agent::Side::Destination).filter(|r| r.stage.is_final())
    });
    assert_eq!(dst.stage, agent::Stage::Received, "{dst:?}");
    assert_moved(&t);
    // Each side counted its end on /metrics.
    for (port, side, outcome, series) in [
        (
            t.ports[0],
            "source",
            "completed",
            "ferry_agent_orders_total",
        ),
        (
            t.ports[1],
            "destination",
            "received",
            "ferry_agent_orders_total",
        ),
        (
            t.ports[0],
            "",
            "",
            "ferry_agent_migration_downtime_seconds_count",
        ),
    ] {
        let labels = [("side", side), ("outcome", outcome)];
        let labels = if side.is_empty() {
            &[][..]
        } else {
            &labels[..]
        };
        wait_for(&format!("{series} {labels:?} on /metrics"), LIMIT, || {
            (value(&metrics(port)?, series, labels) == Some(1.0)).then_some(())
        });
    }
}

/// `web` runs on the second host, in its cgroup, its old process on the
/// first host is gone, and the reports say so.
pub fn assert_moved(t: &TwoHosts) {
    let ([h1, h2], store) = (&t.names, &t.store);
    let moved = ping(&t.sockets[1]).expect("the VM answers on the destination");
    assert_ne!(moved.pid, t.vm.pid);
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", moved.pid)).unwrap();
    assert!(cgroups.contains(&format!("/ferry/{h2}")), "{cgroups}");
    wait_for("the old VM process to end", LIMIT, || {
        (!Path::new(&format!("/proc/{}", t.vm.pid)).exists()).then_some(())
    });
    wait_for("the reports to follow", LIMIT, || {
        let (r1, r2) = (host_report(store, h1)?, host_report(store, h2)?);
        let running = r2
            .vms
            .iter()
            .any(|v| v.name == "web" && v.state == "running");
        (r1.vms.is_empty() && running).then_some(())
    });
}
