//! `ferry cluster up` end to end: hosts as network namespaces, VMs packed
//! two per host on the first hosts. After a quiet period (every VM idle,
//! its vCPU asleep in the VMM) their busy phases make the first host a
//! hotspot; the manager relieves it with no command typed. With a VM alone
//! on a second host, the quiet period is consolidated: that host is
//! emptied and switched off. `ferry cluster status` shows the cluster
//! while it runs, and at the end the timeline is written and nothing is
//! left behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::{TempDir, require_kvm, wait_for};

use crate::harness::FERRY;

/// `ferry cluster up`, interrupted (it then cleans up) if the test fails.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: kill(2) of the child this test started.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
            let _ = (0..600).find(|_| {
                std::thread::sleep(Duration::from_millis(100));
                !matches!(self.0.try_wait(), Ok(None))
            });
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Why namespaces cannot be made here, if they cannot.
fn netns_unavailable() -> Option<&'static str> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    let ip = Command::new("ip").arg("-V").output();
    (!ip.is_ok_and(|o| o.status.success())).then_some("no `ip` (iproute2)")
}

fn status(dir: &Path) -> (bool, String) {
    let out = Command::new(FERRY)
        .args(["cluster", "status", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn command_lines() -> Vec<String> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .collect()
}

/// A finished `ferry cluster up` run: its directory, its output and the
/// timeline it wrote.
struct Run {
    _tmp: TempDir,
    out: String,
    json: serde_json::Value,
}

/// Runs `ferry cluster up` with `args` for 40 s, checks `ferry cluster
/// status` while it runs and that it leaves nothing behind (`hosts` hosts);
/// None when it cannot run here (said on stderr).
fn cluster_up(name: &str, hosts: usize, args: &[&str]) -> Option<Run> {
    // One run at a time: the host cgroups (h1, h2...) are machine-wide.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    require_kvm();
    if let Some(why) = netns_unavailable() {
        eprintln!("skipped: `ferry cluster up` needs network namespaces here: {why}");
        return None;
    }
    let tmp = TempDir::new(name);
    let dir: PathBuf = tmp.join("c");
    let up = Command::new(FERRY)
        .args(["cluster", "up", "--duration", "40s", "--interval", "1s"])
        .args(args)
        .arg("--dir")
        .arg(&dir)
        .stdout(std::fs::File::create(tmp.join("up.out")).unwrap())
        .stderr(std::fs::File::create(tmp.join("up.err")).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = up.id();
    let mut up = Up(up);
    let names: Vec<String> = (1..=hosts).map(|h| format!("h{h}")).collect();
    let shown = wait_for(
        "`ferry cluster status` to show every host",
        Duration::from_secs(30),
        || {
            let (ok, text) = status(&dir);
            (ok && names.iter().all(|h| text.contains(&format!("\n{h} ")))).then_some(text)
        },
    );
    assert!(shown.contains("migrations running:"), "{shown}");
    let ended = wait_for(
        "`ferry cluster up` to end",
        Duration::from_secs(120),
        || up.0.try_wait().unwrap(),
    );
    let out = std::fs::read_to_string(tmp.join("up.out")).unwrap();
    let err = std::fs::read_to_string(tmp.join("up.err")).unwrap();
    assert!(ended.success(), "{ended}\n{out}\n{err}");
    assert!(out.contains("] auto/"), "a status line per interval: {out}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cluster.json")).unwrap()).unwrap();
    assert!(json["samples"].as_array().unwrap().len() >= 10, "{json}");
    let svg = std::fs::read_to_string(dir.join("timeline.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("h2"), "{svg}");
    assert_nothing_left(&dir, pid, &names);
    Some(Run {
        _tmp: tmp,
        out,
        json,
    })
}

/// No namespace, link, host cgroup, process or store of the run is left.
fn assert_nothing_left(dir: &Path, pid: u32, hosts: &[String]) {
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let netns = String::from_utf8_lossy(&netns.stdout);
    assert!(!netns.contains(&format!("ferry-{pid}-")), "{netns}");
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    for name in [format!("fbr{pid}"), format!("fv{pid}-")] {
        assert!(!links.contains(&name), "{name} is left: {links}");
    }
    let cgroups = hostmon::CpuHierarchy::detect().unwrap();
    for host in hosts {
        assert!(
            cgroups.open(host).unwrap().is_none(),
            "host {host}'s cgroup is left"
        );
    }
    let dir_text = dir.to_string_lossy().into_owned();
    let left: Vec<String> = command_lines()
        .into_iter()
        .filter(|c| c.contains(&dir_text))
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
    let (ok, text) = status(dir);
    assert!(!ok && text.contains("no cluster runs"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}

/// The completed orders of a run given for `reason`.
fn completed<'a>(run: &'a Run, reason: &str) -> Vec<&'a serde_json::Value> {
    let orders = run.json["orders"].as_array().unwrap();
    orders
        .iter()
        .filter(|o| o["outcome"] == "completed" && o["reason"] == reason)
        .collect()
}

#[test]
fn cluster_up_relieves_a_hotspot_and_leaves_nothing_behind() {
    let args = ["--hosts", "2", "--vms", "2", "--capacity", "0.3"];
    let Some(run) = cluster_up("ferry-cluster-up", 2, &args) else {
        return;
    };
    let orders = &run.json["orders"];
    let done = *completed(&run, "hotspot")
        .first()
        .unwrap_or_else(|| panic!("no hotspot order completed: {orders}\n{}", run.out));
    assert_eq!(done["from"], "h1", "{done}");
    assert!(done["bytes_sent"].as_u64().unwrap() > 0, "{done}");
    assert!(done["downtime_ms"].as_f64().is_some(), "{done}");
}

#[test]
fn cluster_up_consolidates_a_quiet_period_and_switches_a_host_off() {
    // h1 holds vm1 and vm2, h2 vm3 alone: in the quiet period every VM
    // sleeps, and h2's VM fits on h1.
    let args = ["--hosts", "2", "--vms", "3", "--capacity", "0.5"];
    let Some(run) = cluster_up("ferry-cluster-quiet", 2, &args) else {
        return;
    };
    let orders = &run.json["orders"];
    let done = completed(&run, "coldspot");
    assert!(
        !done.is_empty(),
        "no consolidation completed: {orders}\n{}",
        run.out
    );
    assert!(done[0]["bytes_sent"].as_u64().unwrap() > 0, "{}", done[0]);
    let samples = run.json["samples"].as_array().unwrap();
    let off = samples
        .iter()
        .flat_map(|s| s["hosts"].as_array().unwrap())
        .find(|h| h["switched_off"] == true && h["vms"].as_array().unwrap().is_empty());
    assert!(off.is_some(), "no host was ever reported off: {}", run.out);
}
