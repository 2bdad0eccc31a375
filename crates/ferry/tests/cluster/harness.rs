//! What the cluster tests share: the ferry binary, cleaning up processes
//! and host cgroups, agents started with flags, reading /metrics.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use api::types::Ping;
use testkit::{TempDir, free_port, wait_for};

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
pub const LIMIT: Duration = Duration::from_secs(30);

/// Stops the agents, managers and VM processes and removes the host
/// cgroups, even on failure.
#[derive(Default)]
pub struct Cleanup {
    pub hosts: Vec<String>,
    pub sockets: Vec<PathBuf>,
    /// Agents and managers.
    pub agents: Vec<Child>,
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
                // Whatever the agents started there and the test never
                // named (a receiver now running the migrated VM) goes too.
                for pid in cg.processes().unwrap_or_default() {
                    // SAFETY: plain kill(2) of a process in this test's cgroup.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
                let _ = (0..100).find(|_| {
                    std::thread::sleep(Duration::from_millis(50));
                    cg.processes().is_ok_and(|p| p.is_empty())
                });
                let _ = cg.remove();
            }
        }
    }
}

pub fn ping(socket: &Path) -> Option<Ping> {
    let c = api::Client::new(socket).with_timeout(Duration::from_secs(2));
    serde_json::from_value(c.get_ok(api::routes::PING).ok()?).ok()
}

pub fn agent(dir: &TempDir, host: &str, port: u16, log: &str) -> Child {
    let vm = [OsStr::new("--vm"), OsStr::new("web=idle,memory=32M")];
    agent_with(dir, host, port, log, &vm)
}

/// The flags of a migration secret in `dir` (written if it is not there).
fn secret_flag(dir: &TempDir) -> [std::ffi::OsString; 2] {
    let path = dir.join("secret");
    if !path.exists() {
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
    }
    ["--secret-file".into(), path.into_os_string()]
}

/// `ferry agent` for `host` (capacity 0.5 CPUs unless `extra` says) with
/// its state in `dir`/state and `extra` flags.
pub fn agent_with<S: AsRef<OsStr>>(
    dir: &TempDir,
    host: &str,
    port: u16,
    log: &str,
    extra: &[S],
) -> Child {
    let capacity = extra.iter().any(|a| a.as_ref() == "--capacity");
    Command::new(FERRY)
        .args(["agent", "--host", host])
        .args(if capacity {
            &[][..]
        } else {
            &["--capacity", "0.5"][..]
        })
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
pub fn metrics(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// The value of series `name` with these labels (in any order), if any.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|l| {
        let (series, v) = l.rsplit_once(' ')?;
        let rest = series.strip_prefix(name)?.strip_prefix('{')?;
        labels
            .iter()
            .all(|(k, val)| rest.contains(&format!("{k}=\"{val}\"")))
            .then(|| v.parse().ok())?
    })
}

/// The decision log's events of `kind`.
pub fn events(path: &Path, kind: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one JSON object a line"))
        .filter(|v| v["event"] == kind)
        .collect()
}

/// Two hosts on this machine, each with its agent, sharing the embedded
/// store the first serves; the first runs VM `web`.
pub struct TwoHosts {
    /// Kept for the hosts' state (removed when dropped, kept on failure).
    pub _dirs: [TempDir; 2],
    pub names: [String; 2],
    /// `web`'s API socket on each host.
    pub sockets: [PathBuf; 2],
    pub store_socket: PathBuf,
    pub store: store::Store,
    /// `web`'s process on the first host.
    pub vm: Ping,
    /// Each agent's /metrics port.
    pub ports: [u16; 2],
    pub guard: Cleanup,
}

/// Starts [`TwoHosts`] named `tag`-src and `tag`-dst: `web` is `vm` (a
/// `--vm` spec's GUEST[,...] part); each agent also gets its `extra` flags
/// and the same migration secret. Returns once both hosts have reported.
pub fn two_hosts(tag: &str, vm: &str, extra: [&[&str]; 2]) -> TwoHosts {
    let dirs = [
        TempDir::new(&format!("ferry-{tag}-src")),
        TempDir::new(&format!("ferry-{tag}-dst")),
    ];
    let pid = std::process::id();
    let names = [format!("t-{tag}-src-{pid}"), format!("t-{tag}-dst-{pid}")];
    let sockets = [0, 1].map(|i| dirs[i].join("state/vms/web.sock"));
    let store_socket = dirs[0].join("state/store.sock");
    let mut guard = Cleanup {
        hosts: names.to_vec(),
        sockets: sockets.to_vec(),
        agents: Vec::new(),
    };
    let ports = [free_port(), free_port()];
    let secret = secret_flag(&dirs[0]);
    let web = format!("web={vm}");
    let mut src: Vec<&OsStr> = vec![&secret[0], &secret[1], OsStr::new("--vm"), OsStr::new(&web)];
    src.extend(extra[0].iter().map(OsStr::new));
    guard
        .agents
        .push(agent_with(&dirs[0], &names[0], ports[0], "agent.log", &src));
    let vm = wait_for("the first host's VM", LIMIT, || ping(&sockets[0]));
    let mut dst: Vec<&OsStr> = vec![
        &secret[0],
        &secret[1],
        OsStr::new("--store-socket"),
        store_socket.as_os_str(),
    ];
    dst.extend(extra[1].iter().map(OsStr::new));
    guard
        .agents
        .push(agent_with(&dirs[1], &names[1], ports[1], "agent.log", &dst));
    let store = store::Store::connect(&store::StoreConfig::Embedded {
        socket: store_socket.clone(),
        deadline: Duration::from_secs(2),
    })
    .unwrap();
    wait_for("both hosts' reports", LIMIT, || {
        let hosts = store.list(agent::report::HOSTS_PREFIX).ok()?.kvs.len();
        (hosts == 2).then_some(())
    });
    TwoHosts {
        _dirs: dirs,
        names,
        sockets,
        store_socket,
        store,
        vm,
        ports,
        guard,
    }
}

/// The report `side` wrote on order `id`, if it did.
pub fn side_report(store: &store::Store, id: &str, side: agent::Side) -> Option<agent::SideReport> {
    let kv = store.get(&agent::order::side_key(id, side)).ok()??;
    serde_json::from_slice(&kv.value).ok()
}

/// `host`'s latest report.
pub fn host_report(store: &store::Store, host: &str) -> Option<agent::HostReport> {
    let kv = store.get(&agent::host_key(host)).ok()??;
    serde_json::from_slice(&kv.value).ok()
}
