//! `ferry agent` on real processes: it starts its VM in the host cgroup,
//! serves the host and VM series on /metrics and publishes its report; a
//! killed agent leaves its VM running, and a restarted one adopts it
//! rather than starting another.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use api::types::Ping;
use testkit::{TempDir, free_port, require_kvm, wait_for};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const LIMIT: Duration = Duration::from_secs(30);

/// Stops the VM process and removes the host cgroup, even on failure.
struct Cleanup {
    host: String,
    socket: std::path::PathBuf,
    agent: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        if let Some(p) = ping(&self.socket) {
            let _ = api::Client::new(&self.socket).put(api::routes::VM_SHUTDOWN, None);
            let gone = (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(50));
                !Path::new(&format!("/proc/{}", p.pid)).exists()
            });
            if !gone {
                // SAFETY: plain kill(2) of the VM process this test started.
                unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
            }
        }
        if let Ok(Some(cg)) = hostmon::CpuHierarchy::detect().and_then(|h| h.open(&self.host)) {
            let _ = cg.remove();
        }
    }
}

fn ping(socket: &Path) -> Option<Ping> {
    let c = api::Client::new(socket).with_timeout(Duration::from_secs(2));
    serde_json::from_value(c.get_ok(api::routes::PING).ok()?).ok()
}

fn agent(dir: &TempDir, host: &str, port: u16, log: &str) -> Child {
    Command::new(FERRY)
        .args(["agent", "--host", host, "--capacity", "0.5"])
        .args(["--interval", "200ms", "--vm", "web=idle,memory=32M"])
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
        host: host.clone(),
        socket: socket.clone(),
        agent: Some(agent(&dir, &host, port, "agent1.log")),
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
    let mut first = guard.agent.take().unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(
        ping(&socket).map(|p| p.pid),
        Some(vm.pid),
        "the VM outlived its agent"
    );

    // Restarted: the same VM, adopted, not a second one.
    let port = free_port();
    guard.agent = Some(agent(&dir, &host, port, "agent2.log"));
    let text = metrics_with_vm(port, &host);
    assert_eq!(value(&text, "ferry_host_vms", &h), Some(1.0), "{text}");
    assert_eq!(ping(&socket).map(|p| p.pid), Some(vm.pid));
    let log = std::fs::read_to_string(dir.join("agent2.log")).unwrap();
    assert!(log.contains("VM adopted"), "{log}");
    assert!(!log.contains("VM started"), "{log}");

    // Stopped by SIGTERM: the agent exits 0 and the VM still runs.
    let mut second = guard.agent.take().unwrap();
    // SAFETY: plain kill(2) of the agent this test started.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    let status = wait_for("the agent to exit", LIMIT, || second.try_wait().unwrap());
    assert!(status.success(), "{status:?}");
    assert_eq!(ping(&socket).map(|p| p.pid), Some(vm.pid));
}
