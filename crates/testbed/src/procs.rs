//! The cluster's processes: one `ferry agent` per host (in its namespace
//! when there is one) and one `ferry manager` in the root namespace, each
//! in a process group of its own so a Ctrl-C at the terminal reaches only
//! `ferry cluster up`, which stops them in order. VMs outlive their agent
//! by design, so stopping also kills whatever is left in each host's
//! cgroup and removes the cgroup.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{ClusterConfig, HOST_MEMORY, host_name};
use crate::net::HostNet;

/// How long a process gets to end after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(10);
/// A VM's agent reports that often relative to the manager's interval:
/// twice per decision, so each decision sees a fresh load.
const AGENT_SHARE: u32 = 2;

/// The files of a cluster directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: std::path::PathBuf,
}

impl Layout {
    pub fn store_socket(&self) -> std::path::PathBuf {
        self.dir.join("store.sock")
    }
    pub fn secret(&self) -> std::path::PathBuf {
        self.dir.join("secret")
    }
    pub fn decisions(&self) -> std::path::PathBuf {
        self.dir.join("decisions.jsonl")
    }
    pub fn logs(&self) -> std::path::PathBuf {
        self.dir.join("logs")
    }
    /// Host `name`'s state directory.
    pub fn host_dir(&self, name: &str) -> std::path::PathBuf {
        self.dir.join("hosts").join(name)
    }
}

/// The agents and the manager, stopped (with the VMs) when dropped.
#[derive(Default)]
pub struct Procs {
    /// By host name.
    agents: Vec<(String, Child)>,
    manager: Option<Child>,
    /// Host cgroups to empty and remove.
    hosts: Vec<String>,
}

/// Refuses hosts whose cgroups hold processes: another cluster (or a
/// test) runs hosts of those names on this machine.
pub fn check_cgroups_free(names: &[String]) -> anyhow::Result<()> {
    let h = hostmon::CpuHierarchy::detect().context("cannot find the CPU cgroups")?;
    for name in names {
        if let Some(cg) = h.open(name)?
            && !cg.processes()?.is_empty()
        {
            anyhow::bail!(
                "host cgroup {} holds processes: another cluster on this machine uses host {name}; stop it first",
                cg.path().display()
            );
        }
    }
    Ok(())
}

impl Procs {
    /// Starts host `i`'s agent, on `net` if the hosts have namespaces.
    pub fn start_agent(
        &mut self,
        config: &ClusterConfig,
        layout: &Layout,
        i: usize,
        net: Option<&HostNet>,
    ) -> anyhow::Result<()> {
        let name = host_name(i);
        self.hosts.push(name.clone());
        let mut cmd = Command::new(&config.ferry);
        // Kept open until the agent is spawned: its child joins it.
        let netns = net
            .map(|n| enter_netns(&mut cmd, &n.namespace))
            .transpose()?;
        let (ip, metrics) = match net {
            Some(n) => (n.ip.to_string(), format!("{}:9100", n.ip)),
            None => ("127.0.0.1".to_string(), "127.0.0.1:0".to_string()),
        };
        let interval = units::format_duration(config.interval / AGENT_SHARE);
        cmd.args(["agent", "--host", &name])
            .arg("--state-dir")
            .arg(layout.host_dir(&name))
            .args(["--capacity", &config.capacity.to_string()])
            .args(["--memory", HOST_MEMORY, "--interval", &interval])
            .args(["--migration-ip", &ip, "--metrics", &metrics])
            .arg("--store-socket")
            .arg(layout.store_socket())
            .arg("--secret-file")
            .arg(layout.secret());
        for vm in (0..config.vms).filter(|&v| config.host_of(v) == i) {
            cmd.arg("--vm").arg(config.vm_spec(vm));
        }
        let child = spawn(cmd, &layout.logs(), &name)?;
        drop(netns);
        self.agents.push((name, child));
        Ok(())
    }

    /// Starts the manager: pattern `auto`, the links' rate for its
    /// estimates, a decision log.
    pub fn start_manager(&mut self, config: &ClusterConfig, layout: &Layout) -> anyhow::Result<()> {
        let mut cmd = Command::new(&config.ferry);
        // A VM is not moved twice within a third of the run (at least a
        // minute), so the timeline shows moves rather than ping-pong.
        let cooldown = (config.duration / 3).max(Duration::from_secs(60));
        cmd.args(["manager", "--name", "manager", "--store-socket"])
            .arg(layout.store_socket())
            .args(["--interval", &units::format_duration(config.interval)])
            .args([
                "--pattern",
                "auto",
                "--cooldown",
                &units::format_duration(cooldown),
            ])
            .args(["--order-retention", "24h"])
            .args([
                "--link",
                &units::format_bits_per_sec(config.link.bits_per_sec() as f64),
            ])
            .args(["--host-memory", HOST_MEMORY])
            .arg("--decision-log")
            .arg(layout.decisions());
        self.manager = Some(spawn(cmd, &layout.logs(), "manager")?);
        Ok(())
    }

    /// The processes that ended on their own, with their status.
    pub fn ended(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let all = self
            .agents
            .iter_mut()
            .map(|(n, c)| (format!("agent {n}"), c))
            .chain(self.manager.iter_mut().map(|c| ("manager".to_string(), c)));
        for (what, child) in all {
            if let Ok(Some(status)) = child.try_wait() {
                out.push(format!("{what} ended ({status})"));
            }
        }
        out
    }

    /// Stops the manager, then the agents, then every VM; removes the host
    /// cgroups. Returns what it could not clean up.
    pub fn stop(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        if let Some(m) = self.manager.take() {
            left.extend(terminate("manager", m));
        }
        for (name, a) in std::mem::take(&mut self.agents) {
            left.extend(terminate(&format!("agent {name}"), a));
        }
        for name in std::mem::take(&mut self.hosts) {
            if let Err(e) = empty_cgroup(&name) {
                left.push(format!("host {name}'s cgroup: {e:#}"));
            }
        }
        left
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for what in self.stop() {
            tracing::warn!("cannot clean up {what}");
        }
    }
}

/// Starts `cmd` in its own process group, stdout and stderr to
/// `logs/NAME.out`, its log to `logs/NAME.log`.
fn spawn(mut cmd: Command, logs: &Path, name: &str) -> anyhow::Result<Child> {
    let out = std::fs::File::create(logs.join(format!("{name}.out")))
        .with_context(|| format!("cannot create {name}'s output file in {}", logs.display()))?;
    cmd.arg("--log-file")
        .arg(logs.join(format!("{name}.log")))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    cmd.spawn().with_context(|| format!("cannot start {name}"))
}

/// Makes `cmd` start in network namespace `name` (`/run/netns/NAME`, as
/// `ip netns add` makes it). Entered with setns(2) rather than through
/// `ip netns exec`, which also remounts /sys for the namespace and so
/// hides the cgroup hierarchies the agent puts its VMs in.
fn enter_netns(cmd: &mut Command, name: &str) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = Path::new("/run/netns").join(name);
    let file = std::fs::File::open(&path)
        .with_context(|| format!("cannot open network namespace {}", path.display()))?;
    let fd = file.as_raw_fd();
    // SAFETY: the closure runs in the child between fork and exec and
    // calls only setns(2), which is async-signal-safe; `fd` stays open in
    // the parent until the child is spawned.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(file)
}

/// SIGTERM, then SIGKILL after [`GRACE`]; reaped either way.
fn terminate(what: &str, mut child: Child) -> Option<String> {
    if let Ok(Some(_)) = child.try_wait() {
        return None;
    }
    // SAFETY: kill(2) of a child this process started and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Some(format!(
        "{what} ignored SIGTERM for {GRACE:?} and was killed"
    ))
}

/// Kills what runs in host `name`'s cgroup (its VMs, and receivers) and
/// removes the cgroup.
fn empty_cgroup(name: &str) -> anyhow::Result<()> {
    let h = hostmon::CpuHierarchy::detect()?;
    let Some(cg) = h.open(name)? else {
        return Ok(());
    };
    let deadline = Instant::now() + GRACE;
    loop {
        let pids = cg.processes()?;
        if pids.is_empty() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} processes still in it",
            pids.len()
        );
        for pid in pids {
            // SAFETY: kill(2) of a VM process in this cluster's host cgroup.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cg.remove()?;
    Ok(())
}
