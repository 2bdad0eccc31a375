//! `ferry cluster up` end to end: two hosts as network namespaces, two
//! busy VMs packed on the first, a capacity small enough that they make it
//! a hotspot; the manager relieves it with no command typed, `ferry
//! cluster status` shows the cluster while it runs, and at the end the
//! timeline is written and nothing is left behind.

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

#[test]
fn cluster_up_relieves_a_hotspot_and_leaves_nothing_behind() {
    require_kvm();
    if let Some(why) = netns_unavailable() {
        eprintln!("skipped: `ferry cluster up` needs network namespaces here: {why}");
        return;
    }
    let tmp = TempDir::new("ferry-cluster-up");
    let dir: PathBuf = tmp.join("c");
    let up = Command::new(FERRY)
        .args(["cluster", "up", "--hosts", "2", "--vms", "2"])
        .args(["--duration", "40s", "--interval", "1s", "--capacity", "0.3"])
        .arg("--dir")
        .arg(&dir)
        .stdout(std::fs::File::create(tmp.join("up.out")).unwrap())
        .stderr(std::fs::File::create(tmp.join("up.err")).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = up.id();
    let mut up = Up(up);
    let shown = wait_for(
        "`ferry cluster status` to show both hosts",
        Duration::from_secs(30),
        || {
            let (ok, text) = status(&dir);
            (ok && text.contains("\nh1 ") && text.contains("\nh2 ")).then_some(text)
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
    let orders = json["orders"].as_array().unwrap();
    let done = orders
        .iter()
        .find(|o| o["outcome"] == "completed")
        .unwrap_or_else(|| panic!("no order completed: {orders:?}\n{out}"));
    assert_eq!(done["from"], "h1", "{done}");
    assert_eq!(done["reason"], "hotspot", "{done}");
    assert!(done["bytes_sent"].as_u64().unwrap() > 0, "{done}");
    assert!(done["downtime_ms"].as_f64().is_some(), "{done}");
    assert!(json["samples"].as_array().unwrap().len() >= 10, "{json}");
    let svg = std::fs::read_to_string(dir.join("timeline.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("h2"), "{svg}");

    // Nothing left: namespaces, links, host cgroups, processes, the store.
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
    for host in ["h1", "h2"] {
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
    let (ok, text) = status(&dir);
    assert!(!ok && text.contains("no cluster runs"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}
