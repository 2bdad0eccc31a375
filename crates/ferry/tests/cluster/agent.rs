//! `ferry agent` on real processes: it starts its VM in the host cgroup,
//! serves the host and VM series on /metrics and publishes its report; a
//! killed agent leaves its VM running, and a restarted one adopts it
//! rather than starting another. Two agents carry out a migration order.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use api::types::Ping;
use testkit::{TempDir, free_port, require_kvm, wait_for};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const LIMIT: Duration = Duration::from_secs(30);

/// Stops the agents and VM processes and removes the host cgroups, even on
/// failure.
struct Cleanup {
    hosts: Vec<String>,
    sockets: Vec<PathBuf>,
    agents: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for mut a in self.agents.drain(..) {
            let _ = a.kill();
            let _ = a.wait();
        }
        for socket in &self.sockets {
            let Some(p) = ping(socket) else { continue };
            let _ = api::Client::new(socket).put(api::routes::VM_SHUTDOWN, None);
            let gone = (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(50));
                !Path::new(&format!("/proc/{}", p.pid)).exists()
            });
            if !gone {
                // SAFETY: plain kill(2) of a VM process this test started.
                unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
            }
        }
        for host in &self.hosts {
            if let Ok(Some(cg)) = hostmon::CpuHierarchy::detect().and_then(|h| h.open(host)) {
                let _ = cg.remove();
            }
        }
    }
}

fn ping(socket: &Path) -> Option<Ping> {
    let c = api::Client::new(socket).with_timeout(Duration::from_secs(2));
    serde_json::from_value(c.get_ok(api::routes::PING).ok()?).ok()
}

fn agent(dir: &TempDir, host: &str, port: u16, log: &str) -> Child {
    let vm = [OsStr::new("--vm"), OsStr::new("web=idle,memory=32M")];
    agent_with(dir, host, port, log, &vm)
}

/// `ferry agent` for `host` with its state in `dir`/state and `extra` flags.
fn agent_with(dir: &TempDir, host: &str, port: u16, log: &str, extra: &[&OsStr]) -> Child {
    Command::new(FERRY)
        .args(["agent", "--host", host, "--capacity", "0.5"])
        .args(["--interval", "200ms"])
        .args(extra)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--metrics", &format!("127.0.0.1:{port}")])
        .arg("--log-file")
        .arg(dir.join(log))
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// The body of `GET /metrics`, once it answers.
fn metrics(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// The value of series `name` with these labels (in any order), if any.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let (series, v) = l.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?.strip_prefix('{')?;
        labels
            .iter()
            .all(|(k, val)| rest.contains(&format!("{k}=\"{val}\"")))
            .then(|| v.parse().ok())?
    })
}

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

/// The stage `side` reported on order `id`, if it did.
fn stage(store: &store::Store, id: &str, side: agent::Side) -> Option<agent::SideReport> {
    let kv = store.get(&agent::order::side_key(id, side)).ok()??;
    serde_json::from_slice(&kv.value).ok()
}

#[test]
fn two_agents_carry_out_a_migration_order() {
    require_kvm();
    let (dir1, dir2) = (
        TempDir::new("ferry-order-src"),
        TempDir::new("ferry-order-dst"),
    );
    let pid = std::process::id();
    let (h1, h2) = (format!("t-src-{pid}"), format!("t-dst-{pid}"));
    let secret = dir1.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    // h1 serves the embedded store; h2 uses it.
    let store_socket = dir1.join("state/store.sock");
    let (s1, s2) = (
        dir1.join("state/vms/web.sock"),
        dir2.join("state/vms/web.sock"),
    );
    let mut guard = Cleanup {
        hosts: vec![h1.clone(), h2.clone()],
        sockets: vec![s1.clone(), s2.clone()],
        agents: Vec::new(),
    };
    let secret_flag = [OsStr::new("--secret-file"), secret.as_os_str()];
    let src_flags = [
        &secret_flag[..],
        &[OsStr::new("--vm"), OsStr::new("web=idle,memory=32M")],
    ]
    .concat();
    guard
        .agents
        .push(agent_with(&dir1, &h1, free_port(), "agent.log", &src_flags));
    let vm = wait_for("the source's VM", LIMIT, || ping(&s1));
    let dst_flags = [
        &secret_flag[..],
        &[OsStr::new("--store-socket"), store_socket.as_os_str()],
    ]
    .concat();
    guard
        .agents
        .push(agent_with(&dir2, &h2, free_port(), "agent.log", &dst_flags));
    let store = store::Store::connect(&store::StoreConfig::Embedded {
        socket: store_socket.clone(),
        deadline: Duration::from_secs(2),
    })
    .unwrap();
    wait_for("both hosts' reports", LIMIT, || {
        let hosts = store.list(agent::report::HOSTS_PREFIX).ok()?.kvs.len();
        (hosts == 2).then_some(())
    });

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
        stage(&store, "o-1", agent::Side::Source).filter(|r| r.stage.is_final())
    });
    assert_eq!(done.stage, agent::Stage::Completed, "{done:?}");
    assert!(
        done.bytes_sent > 0 && done.total_time_ms.is_some(),
        "{done:?}"
    );
    let dst = wait_for("the destination's word", LIMIT, || {
        stage(&store, "o-1", agent::Side::Destination).filter(|r| r.stage.is_final())
    });
    assert_eq!(dst.stage, agent::Stage::Received, "{dst:?}");
    // The VM runs on h2, in h2's cgroup; its old process on h1 is gone.
    let moved = ping(&s2).expect("the VM answers on the destination");
    assert_ne!(moved.pid, vm.pid);
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", moved.pid)).unwrap();
    assert!(cgroups.contains(&format!("/ferry/{h2}")), "{cgroups}");
    wait_for("the old VM process to end", LIMIT, || {
        (!Path::new(&format!("/proc/{}", vm.pid)).exists()).then_some(())
    });
    // h2 reports the VM running; h1 no longer reports it.
    wait_for("the reports to follow", LIMIT, || {
        let report = |h: &str| -> Option<agent::HostReport> {
            let kv = store.get(&agent::host_key(h)).ok()??;
            serde_json::from_slice(&kv.value).ok()
        };
        let (r1, r2) = (report(&h1)?, report(&h2)?);
        let running = r2
            .vms
            .iter()
            .any(|v| v.name == "web" && v.state == "running");
        (r1.vms.is_empty() && running).then_some(())
    });
}
