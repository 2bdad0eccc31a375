//! [`HostCgroup`]: one host's share of the machine, a cgroup whose CPU
//! quota is the host's declared capacity, and the accounting of what its
//! processes used.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::HostmonError;
use crate::hierarchy::{CgroupVersion, CpuHierarchy, PARENT};
use crate::load::CpuSample;

/// The CFS period quotas are expressed in (the kernel's default).
const PERIOD_US: u64 = 100_000;
/// The kernel refuses quotas under 1 ms.
const MIN_QUOTA_US: u64 = 1_000;

/// A host's cgroup. Dropping it leaves the cgroup in place (its VMs
/// outlive the agent); [`HostCgroup::remove`] deletes it once empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCgroup {
    name: String,
    version: CgroupVersion,
    /// v2: the cgroup. v1: the cgroup in the `cpu` hierarchy.
    cpu_dir: PathBuf,
    /// v2: the same. v1: the cgroup in the `cpuacct` hierarchy (the same
    /// path when both controllers are mounted together).
    acct_dir: PathBuf,
}

/// What the kernel accounted for a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuStat {
    /// CPU time its processes used, all CPUs added.
    pub usage: Duration,
    /// Quota periods in which it ran, and in how many it was throttled.
    pub nr_periods: u64,
    pub nr_throttled: u64,
    /// Time its processes were held back by the quota.
    pub throttled: Duration,
}

impl HostCgroup {
    pub(crate) fn create(
        h: &CpuHierarchy,
        name: &str,
        cpus: f64,
    ) -> Result<HostCgroup, HostmonError> {
        let quota = quota_us(cpus)?;
        let cg = Self::at(h, name)?;
        if let CpuHierarchy::V2 { root } = h {
            enable_cpu(root)?;
            mkdir(&root.join(PARENT))?;
            enable_cpu(&root.join(PARENT))?;
        }
        for dir in cg.dirs() {
            if let Some(parent) = dir.parent() {
                mkdir(parent)?;
            }
            mkdir(dir)?;
        }
        cg.set_quota(quota)?;
        Ok(cg)
    }

    pub(crate) fn open(h: &CpuHierarchy, name: &str) -> Result<Option<HostCgroup>, HostmonError> {
        let cg = Self::at(h, name)?;
        let exists = cg.dirs().all(|d| d.is_dir());
        Ok(exists.then_some(cg))
    }

    fn at(h: &CpuHierarchy, name: &str) -> Result<HostCgroup, HostmonError> {
        check_name(name)?;
        let (cpu_dir, acct_dir) = match h {
            CpuHierarchy::V2 { root } => {
                let d = root.join(PARENT).join(name);
                (d.clone(), d)
            }
            CpuHierarchy::V1 { cpu, cpuacct } => {
                (cpu.join(PARENT).join(name), cpuacct.join(PARENT).join(name))
            }
        };
        Ok(HostCgroup {
            name: name.to_owned(),
            version: h.version(),
            cpu_dir,
            acct_dir,
        })
    }

    /// The cgroup's directories (one, or two on v1 with separate mounts).
    fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        let second = (self.acct_dir != self.cpu_dir).then_some(&self.acct_dir);
        std::iter::once(&self.cpu_dir).chain(second)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The directory that holds the CPU quota.
    pub fn path(&self) -> &Path {
        &self.cpu_dir
    }

    /// Sets the CPU quota to `cpus` CPUs (1.5: one and a half CPUs' time
    /// in every period, whichever CPUs run it).
    pub fn set_capacity(&self, cpus: f64) -> Result<(), HostmonError> {
        self.set_quota(quota_us(cpus)?)
    }

    fn set_quota(&self, quota: u64) -> Result<(), HostmonError> {
        match self.version {
            CgroupVersion::V2 => write(
                &self.cpu_dir.join("cpu.max"),
                &format!("{quota} {PERIOD_US}"),
            ),
            CgroupVersion::V1 => {
                // Period first: the quota is checked against it.
                write(
                    &self.cpu_dir.join("cpu.cfs_period_us"),
                    &PERIOD_US.to_string(),
                )?;
                write(&self.cpu_dir.join("cpu.cfs_quota_us"), &quota.to_string())
            }
        }
    }

    /// The CPU quota in CPUs, or None if unlimited.
    pub fn capacity(&self) -> Result<Option<f64>, HostmonError> {
        let (quota, period) = match self.version {
            CgroupVersion::V2 => {
                let path = self.cpu_dir.join("cpu.max");
                let text = read(&path)?;
                let mut it = text.split_whitespace();
                let quota = it.next().unwrap_or_default();
                if quota == "max" {
                    return Ok(None);
                }
                (
                    number(&path, quota)?,
                    number(&path, it.next().unwrap_or_default())?,
                )
            }
            CgroupVersion::V1 => {
                let qpath = self.cpu_dir.join("cpu.cfs_quota_us");
                let quota = read(&qpath)?;
                if quota.trim().starts_with('-') {
                    return Ok(None);
                }
                let ppath = self.cpu_dir.join("cpu.cfs_period_us");
                (
                    number(&qpath, quota.trim())?,
                    number(&ppath, read(&ppath)?.trim())?,
                )
            }
        };
        if period == 0 {
            return Err(parse_error(&self.cpu_dir, "a zero period"));
        }
        Ok(Some(quota as f64 / period as f64))
    }

    /// Moves process `pid` with all its threads into this cgroup; its
    /// future threads and children start here too.
    pub fn add_process(&self, pid: u32) -> Result<(), HostmonError> {
        for dir in self.dirs() {
            write(&dir.join("cgroup.procs"), &pid.to_string()).map_err(|e| match e {
                HostmonError::Io { error, .. } if error.raw_os_error() == Some(libc::ESRCH) => {
                    HostmonError::NoProcess(pid)
                }
                other => other,
            })?;
        }
        Ok(())
    }

    /// The processes in this cgroup.
    pub fn processes(&self) -> Result<Vec<u32>, HostmonError> {
        let path = self.cpu_dir.join("cgroup.procs");
        read(&path)?
            .split_whitespace()
            .map(|p| number(&path, p).map(|n| n as u32))
            .collect()
    }

    /// What the kernel accounted so far.
    pub fn cpu_stat(&self) -> Result<CpuStat, HostmonError> {
        let path = self.cpu_dir.join("cpu.stat");
        let text = read(&path)?;
        let field = |name: &str| -> Result<u64, HostmonError> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .map_or(Ok(0), |v| number(&path, v.trim()))
        };
        let mut stat = CpuStat {
            nr_periods: field("nr_periods")?,
            nr_throttled: field("nr_throttled")?,
            ..CpuStat::default()
        };
        match self.version {
            CgroupVersion::V2 => {
                stat.usage = Duration::from_micros(field("usage_usec")?);
                stat.throttled = Duration::from_micros(field("throttled_usec")?);
            }
            CgroupVersion::V1 => {
                let upath = self.acct_dir.join("cpuacct.usage");
                stat.usage = Duration::from_nanos(number(&upath, read(&upath)?.trim())?);
                stat.throttled = Duration::from_nanos(field("throttled_time")?);
            }
        }
        Ok(stat)
    }

    /// The CPU time used so far, stamped now: two samples give the load.
    pub fn sample(&self) -> Result<CpuSample, HostmonError> {
        let usage = self.cpu_stat()?.usage;
        Ok(CpuSample {
            at: Instant::now(),
            usage,
        })
    }

    /// Deletes the cgroup; [`HostmonError::NotEmpty`] while processes
    /// remain in it.
    pub fn remove(self) -> Result<(), HostmonError> {
        if !self.processes()?.is_empty() {
            return Err(HostmonError::NotEmpty(self.cpu_dir));
        }
        for dir in self.dirs() {
            if let Err(error) = std::fs::remove_dir(dir) {
                return Err(match error.raw_os_error() {
                    Some(libc::EBUSY) | Some(libc::ENOTEMPTY) => {
                        HostmonError::NotEmpty(dir.clone())
                    }
                    _ => HostmonError::Io {
                        action: "remove",
                        path: dir.clone(),
                        error,
                    },
                });
            }
        }
        Ok(())
    }
}

fn quota_us(cpus: f64) -> Result<u64, HostmonError> {
    if !(cpus.is_finite() && cpus > 0.0 && cpus <= 65_536.0) {
        return Err(HostmonError::InvalidCapacity(cpus));
    }
    Ok(((cpus * PERIOD_US as f64).round() as u64).max(MIN_QUOTA_US))
}

/// A cgroup name is one path component of letters, digits, `-`, `_`, `.`.
fn check_name(name: &str) -> Result<(), HostmonError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(HostmonError::InvalidName(name.into()))
    }
}

/// Lets children of `dir` (v2) use the cpu controller.
fn enable_cpu(dir: &Path) -> Result<(), HostmonError> {
    let path = dir.join("cgroup.subtree_control");
    if read(&path)?.split_whitespace().any(|c| c == "cpu") {
        return Ok(());
    }
    write(&path, "+cpu")
}

fn mkdir(dir: &Path) -> Result<(), HostmonError> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(HostmonError::Io {
            action: "create",
            path: dir.into(),
            error: e,
        }),
        _ => Ok(()),
    }
}

fn read(path: &Path) -> Result<String, HostmonError> {
    std::fs::read_to_string(path).map_err(|error| HostmonError::Io {
        action: "read",
        path: path.into(),
        error,
    })
}

fn write(path: &Path, value: &str) -> Result<(), HostmonError> {
    std::fs::write(path, value).map_err(|error| HostmonError::Io {
        action: "write",
        path: path.into(),
        error,
    })
}

fn number(path: &Path, text: &str) -> Result<u64, HostmonError> {
    text.parse()
        .map_err(|_| parse_error(path, &format!("{text:?} is not a number")))
}

fn parse_error(path: &Path, detail: &str) -> HostmonError {
    HostmonError::Parse {
        path: path.into(),
        detail: detail.into(),
    }
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
