//! Real cgroups (the tests run as root): a busy process in a host cgroup
//! with a small quota is held to it, and the accounting says so. Bounds are
//! loose and no wall-clock time is asserted.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hostmon::{CpuHierarchy, HostCgroup, HostmonError, vcpu_threads};
use testkit::wait_for;

const CHILD_ENV: &str = "HOSTMON_SPIN_CHILD";
const LIMIT: Duration = Duration::from_secs(60);

/// Run as a child process by the tests below: two busy threads named like
/// a VM's vCPUs, until killed.
#[test]
#[ignore = "a helper process, started by the other tests"]
fn spinning_vcpus_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    for i in 0..2 {
        std::thread::Builder::new()
            .name(format!("vcpu{i}"))
            .spawn(|| {
                loop {
                    std::hint::spin_loop();
                }
            })
            .unwrap();
    }
    loop {
        std::thread::park();
    }
}

/// The spinning child and the cgroup, cleaned up even when a test fails.
struct Fixture {
    child: Option<Child>,
    cgroup: Option<HostCgroup>,
}

impl Fixture {
    /// A host cgroup of `cpus`, and the spinning child if `spin`.
    fn new(name: &str, cpus: f64, spin: bool) -> Fixture {
        let h = CpuHierarchy::detect().expect("a cpu controller");
        eprintln!("cgroup {:?} at {:?}", h.version(), h);
        let child = spin.then(|| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "spinning_vcpus_child",
                    "--ignored",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, "1")
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        });
        let name = format!("{name}-{}", std::process::id());
        let cgroup = h.create(&name, cpus).unwrap();
        Fixture {
            child,
            cgroup: Some(cgroup),
        }
    }

    fn cgroup(&self) -> &HostCgroup {
        self.cgroup.as_ref().unwrap()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.kill();
        if let Some(cg) = self.cgroup.take() {
            // The killed child leaves the cgroup as it is reaped. No
            // wait_for here: a drop during a failing test must not panic.
            for _ in 0..500 {
                if cg.processes().is_ok_and(|p| p.is_empty()) {
                    break;
                }
                std::thread::sleep(testkit::POLL);
            }
            let _ = cg.remove();
        }
    }
}

#[test]
fn a_busy_process_is_held_to_its_hosts_quota() {
    let mut f = Fixture::new("hostmon-quota", 0.2, true);
    let pid = f.pid();
    let vcpus = wait_for("the child's vCPU threads", LIMIT, || {
        let v = vcpu_threads(pid).ok()?;
        (v.len() == 2).then_some(v)
    });
    assert_eq!(f.cgroup().capacity().unwrap(), Some(0.2));

    f.cgroup().add_process(pid).unwrap();
    assert_eq!(f.cgroup().processes().unwrap(), [pid]);
    // Every thread moved, not only the main one.
    for t in &vcpus {
        let cg = std::fs::read_to_string(format!("/proc/{pid}/task/{}/cgroup", t.tid)).unwrap();
        assert!(cg.contains(f.cgroup().name()), "thread {} in {cg}", t.name);
    }

    let start = f.cgroup().sample().unwrap();
    let end = wait_for("0.3 s of CPU in the cgroup", LIMIT, || {
        let s = f.cgroup().sample().ok()?;
        (s.usage >= start.usage + Duration::from_millis(300)).then_some(s)
    });
    let load = end.load_since(&start, 0.2).unwrap();
    // Two spinning threads would use 2 CPUs; the quota allows 0.2 (plus a
    // period's worth at the edges of the interval).
    assert!(load.cpus > 0.0 && load.cpus < 0.5, "{load:?}");
    assert!(load.of_capacity < 2.5, "{load:?}");
    // Throttled periods are counted; their time is not always added up
    // (0 ns after many throttled periods on this machine's cgroup v1), so
    // only the count is required here (cgroup_tests checks the parsing).
    let stat = f.cgroup().cpu_stat().unwrap();
    assert!(stat.nr_throttled > 0, "never throttled: {stat:?}");

    // The threads' own accounting agrees with the cgroup's, loosely.
    let after = vcpu_threads(pid).unwrap();
    let threads_cpu: Duration = after.iter().map(|t| t.cpu).sum();
    let process_cpu = hostmon::process_cpu(pid).unwrap();
    assert!(threads_cpu > Duration::ZERO);
    assert!(threads_cpu <= process_cpu + Duration::from_millis(50));
    assert!(process_cpu <= stat.usage + Duration::from_millis(500));

    // Not removable while the process is in it; removable once it is gone.
    let cg = f.cgroup.take().unwrap();
    assert!(matches!(
        cg.clone().remove(),
        Err(HostmonError::NotEmpty(_))
    ));
    f.kill();
    wait_for("the cgroup to empty", LIMIT, || {
        cg.processes().unwrap().is_empty().then_some(())
    });
    let path = cg.path().to_path_buf();
    cg.remove().unwrap();
    assert!(!path.exists());
}

#[test]
fn a_host_cgroup_is_taken_over_and_its_capacity_changed() {
    let f = Fixture::new("hostmon-adopt", 1.5, false);
    let h = CpuHierarchy::detect().unwrap();
    let name = f.cgroup().name().to_owned();
    let again = h.open(&name).unwrap().expect("the cgroup exists");
    assert_eq!(again.capacity().unwrap(), Some(1.5));
    let recreated = h.create(&name, 0.5).unwrap();
    assert_eq!(recreated, again);
    assert_eq!(f.cgroup().capacity().unwrap(), Some(0.5));
    assert!(matches!(
        f.cgroup().add_process(u32::MAX),
        Err(HostmonError::NoProcess(_)) | Err(HostmonError::Io { .. })
    ));
    assert!(h.open("hostmon-never-created").unwrap().is_none());
}
