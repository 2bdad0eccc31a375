//! What HostCgroup writes and reads, on fake hierarchies in a temporary
//! directory (the real kernel files are exercised by tests/cgroup.rs).

use std::fs;

use super::*;

fn fake(files: &[(&str, &str)]) -> testkit::TempDir {
    let dir = testkit::TempDir::new("hostmon-fake");
    for (name, text) in files {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    dir
}

#[test]
fn v2_sets_cpu_max_and_reads_cpu_stat() {
    let root = fake(&[("cgroup.subtree_control", "memory\n")]);
    fs::create_dir_all(root.join("ferry")).unwrap();
    fs::write(root.join("ferry/cgroup.subtree_control"), "cpu\n").unwrap();
    let h = CpuHierarchy::V2 {
        root: root.to_path_buf(),
    };
    let cg = h.create("h1", 1.5).unwrap();
    assert_eq!(cg.path(), root.join("ferry/h1"));
    // The root did not delegate cpu yet: it was asked to.
    assert_eq!(
        fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(),
        "+cpu"
    );
    assert_eq!(
        fs::read_to_string(root.join("ferry/cgroup.subtree_control")).unwrap(),
        "cpu\n"
    );
    assert_eq!(
        fs::read_to_string(cg.path().join("cpu.max")).unwrap(),
        "150000 100000"
    );
    assert_eq!(cg.capacity().unwrap(), Some(1.5));
    fs::write(cg.path().join("cpu.max"), "max 100000\n").unwrap();
    assert_eq!(cg.capacity().unwrap(), None);
    fs::write(
        cg.path().join("cpu.stat"),
        "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n\
         nr_periods 40\nnr_throttled 7\nthrottled_usec 120000\n",
    )
    .unwrap();
    let stat = cg.cpu_stat().unwrap();
    assert_eq!(
        stat,
        CpuStat {
            usage: Duration::from_millis(2500),
            nr_periods: 40,
            nr_throttled: 7,
            throttled: Duration::from_millis(120),
        }
    );
    fs::write(cg.path().join("cgroup.procs"), "12\n34\n").unwrap();
    assert_eq!(cg.processes().unwrap(), [12, 34]);
    assert_eq!(h.open("h1").unwrap(), Some(cg.clone()));
    assert_eq!(h.open("h2").unwrap(), None);
    assert!(matches!(cg.remove(), Err(HostmonError::NotEmpty(_))));
}

#[test]
fn v1_splits_quota_and_accounting() {
    let root = fake(&[]);
    let (cpu, acct) = (root.join("cpu"), root.join("cpuacct"));
    fs::create_dir_all(&cpu).unwrap();
    fs::create_dir_all(&acct).unwrap();
    let h = CpuHierarchy::V1 {
        cpu: cpu.clone(),
        cpuacct: acct.clone(),
    };
    let cg = h.create("h-1.a_b", 0.25).unwrap();
    let dir = cpu.join("ferry/h-1.a_b");
    assert_eq!(
        fs::read_to_string(dir.join("cpu.cfs_quota_us")).unwrap(),
        "25000"
    );
    assert_eq!(
        fs::read_to_string(dir.join("cpu.cfs_period_us")).unwrap(),
        "100000"
    );
    assert!(acct.join("ferry/h-1.a_b").is_dir());
    assert_eq!(cg.capacity().unwrap(), Some(0.25));
    fs::write(acct.join("ferry/h-1.a_b/cpuacct.usage"), "1500000000\n").unwrap();
    fs::write(
        dir.join("cpu.stat"),
        "nr_periods 10\nnr_throttled 3\nthrottled_time 4000000\n",
    )
    .unwrap();
    let stat = cg.cpu_stat().unwrap();
    assert_eq!(stat.usage, Duration::from_millis(1500));
    assert_eq!(stat.throttled, Duration::from_millis(4));
    assert_eq!((stat.nr_periods, stat.nr_throttled), (10, 3));
    // Both hierarchies get the process.
    cg.add_process(77).unwrap();
    assert_eq!(fs::read_to_string(dir.join("cgroup.procs")).unwrap(), "77");
    assert_eq!(
        fs::read_to_string(acct.join("ferry/h-1.a_b/cgroup.procs")).unwrap(),
        "77"
    );
    fs::write(dir.join("cpu.cfs_quota_us"), "-1\n").unwrap();
    assert_eq!(cg.capacity().unwrap(), None);
}

#[test]
fn bad_names_and_capacities_are_refused() {
    let h = CpuHierarchy::V1 {
        cpu: "/nonexistent/cpu".into(),
        cpuacct: "/nonexistent/cpuacct".into(),
    };
    for name in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
        assert!(
            matches!(h.create(name, 1.0), Err(HostmonError::InvalidName(_))),
            "{name:?}"
        );
    }
    for cpus in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            h.create("ok", cpus),
            Err(HostmonError::InvalidCapacity(_))
        ));
    }
    // A tiny capacity gets the kernel's smallest quota.
    assert_eq!(quota_us(0.001).unwrap(), MIN_QUOTA_US);
}

#[test]
fn garbage_in_kernel_files_is_an_error() {
    let root = fake(&[]);
    let h = CpuHierarchy::V2 {
        root: root.to_path_buf(),
    };
    fs::create_dir_all(root.join("ferry/h")).unwrap();
    let cg = h.open("h").unwrap().unwrap();
    fs::write(cg.path().join("cpu.stat"), "usage_usec lots\n").unwrap();
    let e = cg.cpu_stat().unwrap_err().to_string();
    assert!(e.contains("is not a number"), "{e}");
    fs::write(cg.path().join("cpu.max"), "10 0\n").unwrap();
    assert!(matches!(cg.capacity(), Err(HostmonError::Parse { .. })));
}
