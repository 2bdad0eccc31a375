//! Per-process and per-thread CPU time from /proc: a VM is one process,
//! and its vCPUs are threads named `vcpu0`, `vcpu1`... (as `vmm` names
//! them), so a VM's guest load is the CPU time of those threads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::HostmonError;

/// The prefix of vCPU thread names, followed by the vCPU's index.
pub const VCPU_THREAD_PREFIX: &str = "vcpu";

/// One thread's CPU time so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadCpu {
    pub tid: u32,
    /// Its name (the kernel keeps 15 bytes).
    pub name: String,
    /// User plus system time.
    pub cpu: Duration,
}

impl ThreadCpu {
    /// The vCPU index if this is a vCPU thread.
    pub fn vcpu_index(&self) -> Option<u32> {
        let digits = self.name.strip_prefix(VCPU_THREAD_PREFIX)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
}

/// Every live thread of process `pid`, in thread-id order.
pub fn threads(pid: u32) -> Result<Vec<ThreadCpu>, HostmonError> {
    let dir = PathBuf::from(format!("/proc/{pid}/task"));
    let entries = std::fs::read_dir(&dir).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => HostmonError::NoProcess(pid),
        _ => HostmonError::Io {
            action: "list",
            path: dir.clone(),
            error,
        },
    })?;
    let tick = clock_tick();
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread that ended since the listing is skipped.
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (name, ticks) = parse_stat(&text).ok_or_else(|| stat_error(&entry.path()))?;
        out.push(ThreadCpu {
            tid,
            name,
            cpu: ticks_to_duration(ticks, tick),
        });
    }
    out.sort_by_key(|t| t.tid);
    Ok(out)
}

/// The vCPU threads of process `pid`, in vCPU order.
pub fn vcpu_threads(pid: u32) -> Result<Vec<ThreadCpu>, HostmonError> {
    let mut v: Vec<ThreadCpu> = threads(pid)?
        .into_iter()
        .filter(|t| t.vcpu_index().is_some())
        .collect();
    v.sort_by_key(|t| t.vcpu_index());
    Ok(v)
}

/// The CPU time of process `pid`, all its threads (ended ones included).
pub fn process_cpu(pid: u32) -> Result<Duration, HostmonError> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = std::fs::read_to_string(&path).map_err(|_| HostmonError::NoProcess(pid))?;
    let (_, ticks) = parse_stat(&text).ok_or_else(|| stat_error(&path))?;
    Ok(ticks_to_duration(ticks, clock_tick()))
}

fn stat_error(path: &Path) -> HostmonError {
    HostmonError::Parse {
        path: path.into(),
        detail: "not a /proc stat line".into(),
    }
}

/// The name and user+system ticks of a `/proc/.../stat` line:
/// `PID (NAME) STATE PPID ... UTIME(14) STIME(15) ...`. The name may hold
/// spaces and parentheses, so it ends at the last `)`.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state): field N is rest[N - 3].
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// The length of one clock tick (`_SC_CLK_TCK`, 100 Hz nearly always).
fn clock_tick() -> Duration {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Duration::from_nanos(1_000_000_000 / hz)
}

fn ticks_to_duration(ticks: u64, tick: Duration) -> Duration {
    Duration::from_nanos(ticks.saturating_mul(tick.as_nanos() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_awkward_names() {
        let line = "4242 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 1 0\n";
        assert_eq!(parse_stat(line), Some(("a (b) c".into(), 175)));
        assert_eq!(parse_stat("12 (x) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn vcpu_names() {
        let t = |name: &str| ThreadCpu {
            tid: 1,
            name: name.into(),
            cpu: Duration::ZERO,
        };
        assert_eq!(t("vcpu0").vcpu_index(), Some(0));
        assert_eq!(t("vcpu12").vcpu_index(), Some(12));
        assert_eq!(t("vcpu").vcpu_index(), None);
        assert_eq!(t("vcpu-x").vcpu_index(), None);
        assert_eq!(t("api").vcpu_index(), None);
    }

    #[test]
    fn this_process_has_threads() {
        let me = std::process::id();
        let ts = threads(me).unwrap();
        assert!(ts.iter().any(|t| t.tid == me));
        assert!(process_cpu(me).is_ok());
        assert!(matches!(threads(u32::MAX), Err(HostmonError::NoProcess(_))));
    }
}
