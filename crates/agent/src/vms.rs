//! The host's VMs as processes: one `ferry run` per VM, started in a
//! process group of its own (so it outlives the agent and no signal to the
//! agent reaches it), its API socket, serial output and log under the
//! agent's state directory. Adoption finds them again by their sockets.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use api::types::{MigrationStatus, Ping, VmStatus, vm_state};
use api::{Client, routes};

use crate::config::VmSpec;

/// How long a new VM process gets to answer on its socket.
const START_WITHIN: Duration = Duration::from_secs(20);
/// How long one question to a VM process may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// One VM process of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmProcess {
    /// The VM's name (its API id).
    pub name: String,
    pub pid: u32,
    pub socket: PathBuf,
}

/// The folder of the VMs' sockets, serial output and logs.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("vms")
}

/// The API socket of VM `name`.
pub fn socket(state_dir: &Path, name: &str) -> PathBuf {
    dir(state_dir).join(format!("{name}.sock"))
}

/// Starts VM `spec` as a `ferry run` process of `ferry`, and waits until
/// its API answers.
pub fn start(ferry: &Path, state_dir: &Path, spec: &VmSpec) -> anyhow::Result<VmProcess> {
    let mut cmd = Command::new(ferry);
    cmd.arg("run").args(["--guest", &spec.guest]);
    if let Some(m) = &spec.memory {
        cmd.args(["--memory", m]);
    }
    if let Some(n) = spec.vcpus {
        cmd.args(["--vcpus", &n.to_string()]);
    }
    if let Some(a) = &spec.append {
        cmd.args(["--append", a]);
    }
    let vm = spawn(cmd, state_dir, &spec.name)?;
    tracing::info!(vm = %vm.name, pid = vm.pid, "VM started");
    Ok(vm)
}

/// What a receiver for an incoming VM is told.
pub struct Receiver<'a> {
    /// The VM's name, kept on arrival.
    pub name: &'a str,
    /// Where it listens, IP:PORT.
    pub listen: &'a str,
    /// The migration secret shared with the sources.
    pub secret_file: &'a Path,
    /// Mutual TLS with the source (`--tls-dir`).
    pub tls_dir: Option<&'a Path>,
    /// Largest guest memory it accepts, e.g. 16G.
    pub max_memory: &'a str,
    /// How long it waits for its source to authenticate.
    pub accept_timeout: Duration,
}

/// Starts a `ferry receive` process for an incoming VM, and waits until its
/// API answers (state `incoming`).
pub fn start_receiver(ferry: &Path, state_dir: &Path, r: &Receiver) -> anyhow::Result<VmProcess> {
    let mut cmd = Command::new(ferry);
    cmd.arg("receive")
        .args(["--listen", r.listen, "--max-memory", r.max_memory])
        .arg("--secret-file")
        .arg(r.secret_file)
        .arg("--accept-timeout")
        .arg(format!("{}ms", r.accept_timeout.as_millis()));
    if let Some(d) = r.tls_dir {
        cmd.arg("--tls-dir").arg(d);
    }
    let vm = spawn(cmd, state_dir, r.name)?;
    tracing::info!(vm = %vm.name, pid = vm.pid, listen = r.listen, "receiver started");
    Ok(vm)
}

/// Spawns `cmd` (a hosting subcommand) as VM `name`'s process: its own
/// process group, its socket, serial output and log in the VMs' folder;
/// returns once its API answers.
fn spawn(mut cmd: Command, state_dir: &Path, name: &str) -> anyhow::Result<VmProcess> {
    let folder = dir(state_dir);
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let sock = socket(state_dir, name);
    if let Some(p) = ping(&sock) {
        anyhow::bail!("VM {name} already runs here (pid {})", p.pid);
    }
    let log = folder.join(format!("{name}.log"));
    let stderr = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    cmd.args(["--name", name])
        .arg("--api")
        .arg(&sock)
        .arg("--serial")
        .arg(folder.join(format!("{name}.serial")))
        .arg("--log-file")
        .arg(&log);
    let program = cmd.get_program().to_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", Path::new(&program).display()))?;
    let pid = child.id();
    // Reap it if it ends while this agent lives; after, init does.
    std::thread::Builder::new()
        .name(format!("reap-{pid}"))
        .spawn(move || {
            let _ = child.wait();
        })?;
    Client::new(&sock)
        .wait_ready(START_WITHIN)
        .with_context(|| format!("VM {name} did not answer on {}", sock.display()))?;
    Ok(VmProcess {
        name: name.to_string(),
        pid,
        socket: sock,
    })
}

/// The VM processes whose sockets answer in the state directory, by name.
/// A socket nobody answers on is left alone and logged: its process may
/// be hung rather than gone.
pub fn adopt(state_dir: &Path) -> Vec<VmProcess> {
    let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "sock") {
            continue;
        }
        match ping(&path) {
            Some(p) => {
                tracing::info!(vm = %p.vm, pid = p.pid, "VM adopted");
                found.push(VmProcess {
                    name: p.vm,
                    pid: p.pid,
                    socket: path,
                });
            }
            None => {
                tracing::warn!(socket = %path.display(), "no VM answers on this socket; not adopted")
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

fn client(sock: &Path) -> Client {
    Client::new(sock).with_timeout(ASK_TIMEOUT)
}

/// Who answers on `sock`, if anyone.
pub fn ping(sock: &Path) -> Option<Ping> {
    let v = client(sock).get_ok(routes::PING).ok()?;
    serde_json::from_value(v).ok()
}

impl VmProcess {
    /// The VM's status, if its process answers.
    pub fn status(&self) -> Option<VmStatus> {
        let v = client(&self.socket).get_ok(routes::VM).ok()?;
        serde_json::from_value(v).ok()
    }

    /// Its latest migration out, running or done, if it answers.
    pub fn last_migration(&self) -> Option<MigrationStatus> {
        let v = client(&self.socket).get_ok(routes::VM_MIGRATE).ok()?;
        serde_json::from_value(v).ok()
    }

    /// Asks its process for `route` (a PUT with `body`); the API's error
    /// line if it refused.
    pub fn put(&self, route: &str, body: Option<&serde_json::Value>) -> anyhow::Result<()> {
        client(&self.socket)
            .put_ok(route, body)
            .map(drop)
            .with_context(|| format!("VM {}", self.name))
    }

    /// Its running migration, if one runs.
    pub fn migration(&self, status: &VmStatus) -> Option<MigrationStatus> {
        if status.state != vm_state::MIGRATING {
            return None;
        }
        let v = client(&self.socket).get_ok(routes::VM_MIGRATE).ok()?;
        serde_json::from_value(v).ok()
    }
}
