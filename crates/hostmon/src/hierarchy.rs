//! Where the CPU controller lives: cgroup v2 when its unified hierarchy
//! has `cpu`, else cgroup v1's `cpu` and `cpuacct` hierarchies. A kernel
//! binds each controller to one hierarchy only, so on hybrid machines
//! (v1 controllers, an empty v2 mounted beside them) only v1 can cap a host.

use std::path::{Path, PathBuf};

use crate::HostmonError;
use crate::cgroup::HostCgroup;

/// Which cgroup interface caps and accounts CPU on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// `cpu.cfs_quota_us`/`cpu.cfs_period_us`, `cpuacct.usage`.
    V1,
    /// `cpu.max`, `cpu.stat`.
    V2,
}

/// The mounted hierarchies that hold the CPU controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuHierarchy {
    V2 {
        root: PathBuf,
    },
    /// `cpu` and `cpuacct` may be mounted together (then both are one path).
    V1 {
        cpu: PathBuf,
        cpuacct: PathBuf,
    },
}

/// Ferry's host cgroups live under this group in each hierarchy.
pub(crate) const PARENT: &str = "ferry";

impl CpuHierarchy {
    /// Finds the CPU controller from this process's mount table.
    pub fn detect() -> Result<CpuHierarchy, HostmonError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(|error| HostmonError::Io {
            action: "read",
            path: path.into(),
            error,
        })?;
        Self::from_mountinfo(&text, |root| {
            std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default()
        })
    }

    /// The choice, from a mount table and a reader of a v2 root's
    /// `cgroup.controllers`.
    pub fn from_mountinfo(
        mountinfo: &str,
        controllers: impl Fn(&Path) -> String,
    ) -> Result<CpuHierarchy, HostmonError> {
        let mut cpu = None;
        let mut cpuacct = None;
        for m in mountinfo.lines().filter_map(Mount::parse) {
            match m.fstype {
                "cgroup2" => {
                    let root = PathBuf::from(m.point);
                    if controllers(&root).split_whitespace().any(|c| c == "cpu") {
                        return Ok(CpuHierarchy::V2 { root });
                    }
                }
                "cgroup" => {
                    let opts: Vec<&str> = m.options.split(',').collect();
                    if opts.contains(&"cpu") {
                        cpu = Some(PathBuf::from(m.point));
                    }
                    if opts.contains(&"cpuacct") {
                        cpuacct = Some(PathBuf::from(m.point));
                    }
                }
                _ => {}
            }
        }
        match (cpu, cpuacct) {
            (Some(cpu), Some(cpuacct)) => Ok(CpuHierarchy::V1 { cpu, cpuacct }),
            _ => Err(HostmonError::NoCpuController),
        }
    }

    pub fn version(&self) -> CgroupVersion {
        match self {
            CpuHierarchy::V2 { .. } => CgroupVersion::V2,
            CpuHierarchy::V1 { .. } => CgroupVersion::V1,
        }
    }

    /// Creates the host cgroup `name` with a CPU quota of `cpus` CPUs, or
    /// takes over the one a previous agent left and sets its quota.
    pub fn create(&self, name: &str, cpus: f64) -> Result<HostCgroup, HostmonError> {
        HostCgroup::create(self, name, cpus)
    }

    /// The host cgroup `name` if it exists.
    pub fn open(&self, name: &str) -> Result<Option<HostCgroup>, HostmonError> {
        HostCgroup::open(self, name)
    }
}

/// One line of /proc/self/mountinfo, the fields used here.
struct Mount<'a> {
    point: &'a str,
    fstype: &'a str,
    options: &'a str,
}

impl<'a> Mount<'a> {
    /// `ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTS`
    fn parse(line: &'a str) -> Option<Mount<'a>> {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split_whitespace().nth(4)?;
        let mut right = right.split_whitespace();
        let fstype = right.next()?;
        let options = right.nth(1)?;
        Some(Mount {
            point,
            fstype,
            options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_machines_use_v1() {
        let h = CpuHierarchy::from_mountinfo(HYBRID, |_| "memory pids".into()).unwrap();
        assert_eq!(
            h,
            CpuHierarchy::V1 {
                cpu: "/sys/fs/cgroup/cpu".into(),
                cpuacct: "/sys/fs/cgroup/cpuacct".into()
            }
        );
    }

    #[test]
    fn v2_wins_when_it_has_cpu() {
        let text =
            "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = CpuHierarchy::from_mountinfo(text, |p| {
            assert_eq!(p, Path::new("/sys/fs/cgroup"));
            "cpuset cpu io memory pids".into()
        })
        .unwrap();
        assert_eq!(h.version(), CgroupVersion::V2);
        // Also on a hybrid machine whose v2 took the controller.
        let h = CpuHierarchy::from_mountinfo(HYBRID, |_| "cpu".into()).unwrap();
        assert_eq!(
            h,
            CpuHierarchy::V2 {
                root: "/sys/fs/cgroup/unified".into()
            }
        );
    }

    #[test]
    fn comounted_v1_and_nothing() {
        let text = "25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let h = CpuHierarchy::from_mountinfo(text, |_| String::new()).unwrap();
        let both = PathBuf::from("/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(
            h,
            CpuHierarchy::V1 {
                cpu: both.clone(),
                cpuacct: both
            }
        );
        let none = CpuHierarchy::from_mountinfo("garbage\n\n1 2 - x", |_| String::new());
        assert!(matches!(none, Err(HostmonError::NoCpuController)));
    }
}
