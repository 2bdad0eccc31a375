//! One VM hosted by this process, and what operators can do to it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use api::types::{MigrateRequest, vm_state};
use vmm::{RunState, Vm};

use crate::migration::{self, Job, StartError};

/// The VM this process runs.
pub struct Instance {
    pub vm: Arc<Vm>,
    /// The latest migration started from here, if any.
    migration: Mutex<Option<Arc<Job>>>,
    shutdown: AtomicBool,
}

/// Result of a snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotDone {
    pub path: PathBuf,
    pub bytes: u64,
    pub pages: u64,
    pub zero_pages: u64,
    pub duration_ms: f64,
}

impl Instance {
    pub fn new(vm: Vm) -> Self {
        Instance {
            vm: Arc::new(vm),
            migration: Mutex::new(None),
            shutdown: AtomicBool::new(false),
        }
    }

    /// Asks the process to stop the VM and exit.
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.vm.stop(vmm::ExitReason::Stopped);
    }

    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// The latest migration started from here, if any.
    pub fn migration(&self) -> Option<Arc<Job>> {
        self.migration.lock().unwrap().clone()
    }

    /// Starts migrating the VM as `req` asks, unless the request is bad, a
    /// migration is running, or the VM is not running or paused here.
    pub fn start_migration(&self, req: MigrateRequest) -> Result<(), StartError> {
        let opts = migration::options(&req)?;
        let state = self.state_name();
        let mut slot = self.migration.lock().unwrap();
        if let Some(job) = slot.as_ref() {
            if job.running() {
                return Err(StartError::Running {
                    to: job.to().to_string(),
                });
            }
            if job.handed_over() {
                return Err(StartError::Migrated);
            }
        }
        match state {
            vm_state::RUNNING | vm_state::PAUSED => {}
            s => return Err(StartError::State(s)),
        }
        *slot = Some(Job::spawn(self.vm.clone(), req.to, opts)?);
        Ok(())
    }

    /// Lifecycle state as the API reports it.
    pub fn state_name(&self) -> &'static str {
        if let Some(job) = self.migration.lock().unwrap().as_ref() {
            if job.running() {
                return vm_state::MIGRATING;
            }
            if job.handed_over() {
                return vm_state::MIGRATED;
            }
        }
        match self.vm.run_state() {
            RunState::Running => vm_state::RUNNING,
            RunState::Paused => vm_state::PAUSED,
            RunState::Exited(_) => vm_state::EXITED,
        }
    }

    /// The guest's latest counters from its status page, if it publishes them.
    pub fn guest_counters(&self) -> Option<api::types::GuestCounters> {
        let low = self.vm.host_regions().into_iter().find(|r| r.gpa == 0)?;
        if low.len < guest::status::GPA + guest::status::PAGE_SIZE as u64 {
            return None;
        }
        // SAFETY: the page lies inside the low RAM mapping, which lives as
        // long as the VM; the reader copes with concurrent guest writes.
        let page = unsafe {
            std::slice::from_raw_parts(
                low.host.add(guest::status::GPA as usize),
                guest::status::PAGE_SIZE,
            )
        };
        let s = guest::status::read(page)?;
        Some(api::types::GuestCounters {
            workload: s.workload,
            heartbeat_seq: s.heartbeat_seq,
            pages_written: s.pages_written,
            write_rate: s.write_rate,
            verify_passes: s.verify_passes,
            verify_failures: s.verify_failures,
            ops_total: s.ops,
            ops_per_sec: s.ops_per_sec,
            p50_ns: s.p50_ns,
            p99_ns: s.p99_ns,
        })
    }

    /// Writes a snapshot atomically: to `PATH.partial`, synced, then renamed,
    /// so a failure never leaves a half-written snapshot under `path`.
    /// Errors name `path`, the file the operator asked for.
    pub fn snapshot(&self, path: &Path) -> anyhow::Result<SnapshotDone> {
        let start = Instant::now();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".partial");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp)
            .with_context(|| format!("cannot create snapshot {}", path.display()))?;
        let result = vmm::snapshot::save(&self.vm, &file)
            .map_err(anyhow::Error::from)
            .and_then(|stats| {
                let mut f = &file;
                f.flush()?;
                file.sync_all()?;
                Ok(stats)
            });
        let stats = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e).with_context(|| format!("cannot write snapshot {}", path.display()));
            }
        };
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e)
                .with_context(|| format!("cannot move snapshot into place at {}", path.display()));
        }
        Ok(SnapshotDone {
            path: path.to_path_buf(),
            bytes: stats.bytes,
            pages: stats.pages,
            zero_pages: stats.zero_pages,
            duration_ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }
}
