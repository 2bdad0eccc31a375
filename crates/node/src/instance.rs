//! One VM hosted by this process, and what operators can do to it. The
//! instance exists (and its API answers) before the VM does: it is
//! `booting` or `incoming` until [`Instance::attach`].

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use anyhow::Context;
use api::events::{Cause, EventKind};
use api::types::{MigrateRequest, vm_state};
use vmm::{RunState, Vm};

use crate::events::EventHub;
use crate::migration::{self, Job, StartError};
use crate::statedir::{Recovery, StateDir};

/// Where this process maps `vm`'s status page (guest-physical
/// `guest::status::GPA`), if its low RAM reaches that far.
pub fn status_page_addr(vm: &Vm) -> Option<u64> {
    let low = vm.host_regions().into_iter().find(|r| r.gpa == 0)?;
    if low.len < guest::status::GPA + guest::status::PAGE_SIZE as u64 {
        return None;
    }
    Some(low.host as u64 + guest::status::GPA)
}

/// The VM this process runs.
pub struct Instance {
    events: Arc<EventHub>,
    vm: OnceLock<Arc<Vm>>,
    /// The state reported until the VM exists: booting or incoming.
    before: &'static str,
    /// The latest migration started from here, if any.
    migration: Mutex<Option<Arc<Job>>>,
    /// Shutdown requests so far (API or signal).
    shutdowns: AtomicU64,
    /// Where an incoming VM's status page is mapped, from when its memory
    /// exists until it runs here (then `vm` says).
    arriving_page: Mutex<Option<u64>>,
    /// Where guest memory and post-copy recovery records live, if in a file.
    state_dir: OnceLock<Arc<StateDir>>,
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

/// Why a pause or resume was refused.
#[derive(Debug)]
pub enum StateError {
    /// Not possible in this state (409).
    Wrong {
        verb: &'static str,
        state: &'static str,
    },
    /// The VMM failed (500).
    Vmm(vmm::Error),
}

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateError::Wrong { verb, state } => write!(f, "cannot {verb}: the VM is {state}"),
            StateError::Vmm(e) => e.fmt(f),
        }
    }
}

impl Instance {
    /// An instance whose VM is not there yet; `before` is
    /// [`vm_state::BOOTING`] or [`vm_state::INCOMING`].
    pub fn new(id: &str, before: &'static str) -> Arc<Instance> {
        let events = EventHub::new(id);
        events.publish(EventKind::VmCreated {
            state: before.to_string(),
        });
        Arc::new(Instance {
            events,
            vm: OnceLock::new(),
            before,
            migration: Mutex::new(None),
            shutdowns: AtomicU64::new(0),
            arriving_page: Mutex::new(None),
            state_dir: OnceLock::new(),
        })
    }

    /// The VM now exists: booted, restored or received.
    pub fn attach(&self, vm: Vm) {
        let state = match vm.run_state() {
            RunState::Running => vm_state::RUNNING,
            _ => vm_state::PAUSED,
        };
        if self.vm.set(Arc::new(vm)).is_ok() {
            self.events.publish(EventKind::VmStarted {
                state: state.to_string(),
            });
        }
    }

    /// Guest memory lives in `dir`'s file: migrations keep their post-copy
    /// recovery record there.
    pub fn set_state_dir(&self, dir: Arc<StateDir>) {
        let _ = self.state_dir.set(dir);
    }

    /// The VM is gone from here for good, or ends: nothing to recover.
    pub fn remove_state_dir(&self) {
        if let Some(d) = self.state_dir.get() {
            d.remove();
        }
    }

    /// The VM's identity.
    pub fn id(&self) -> &str {
        self.events.vm()
    }

    pub fn events(&self) -> &Arc<EventHub> {
        &self.events
    }

    /// The VM, once it exists.
    pub fn vm(&self) -> Option<&Arc<Vm>> {
        self.vm.get()
    }

    /// An incoming VM's memory now exists (before any page arrives): from
    /// now on the API says where its status page is, so a sampler can
    /// follow the switchover.
    pub fn arriving(&self, vm: &Vm) {
        *self.arriving_page.lock().unwrap_or_else(|e| e.into_inner()) = status_page_addr(vm);
    }

    /// Where this process maps the guest's status page: the VM's, or the
    /// arriving VM's while it is received.
    pub fn status_page_addr(&self) -> Option<u64> {
        match self.vm() {
            Some(vm) => status_page_addr(vm),
            None => *self.arriving_page.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Asks the process to stop the VM and exit, as `ferry ctl shutdown`
    /// and SIGTERM do: a migration before Commit is cancelled (the VM
    /// rolls back here) and the VM stops once it has; a migration past
    /// Commit is let finish.
    pub fn request_shutdown(&self) {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
        if let Some(job) = self.migration()
            && job.running()
        {
            job.cancel();
        }
    }

    pub fn shutdown_requested(&self) -> bool {
        self.shutdown_requests() > 0
    }

    /// How many times shutdown was asked for.
    pub fn shutdown_requests(&self) -> u64 {
        self.shutdowns.load(Ordering::SeqCst)
    }

    /// The latest migration started from here, if any.
    pub fn migration(&self) -> Option<Arc<Job>> {
        self.migration.lock().unwrap().clone()
    }

    /// True while a migration out of here runs.
    pub fn migrating(&self) -> bool {
        self.migration().is_some_and(|j| j.running())
    }

    /// Starts migrating the VM as `req` asks, unless the request is bad, a
    /// migration is running, or the VM is not running or paused here.
    pub fn start_migration(&self, req: MigrateRequest) -> Result<Arc<Job>, StartError> {
        let mut opts = migration::options(&req)?;
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
        let vm = match (state, self.vm()) {
            (vm_state::RUNNING | vm_state::PAUSED, Some(vm)) => vm.clone(),
            (s, _) => return Err(StartError::State(s)),
        };
        if self.shutdown_requested() {
            return Err(StartError::State("shutting down"));
        }
        if let Some(d) = self.state_dir.get() {
            opts.journal = Some(d.journal(self.id(), &req, vm.config()));
        }
        let job = Job::spawn(vm, req.to, opts, self.events.clone())?;
        *slot = Some(job.clone());
        Ok(job)
    }

    /// Takes up the post-copy a killed process recorded (`rec`), the
    /// retired VM attached and its state directory set.
    pub fn resume_migration(&self, rec: Recovery) -> Result<Arc<Job>, StartError> {
        let mut opts = migration::options(&rec.request)?;
        let vm = self.vm().ok_or(StartError::State(self.before))?.clone();
        if let Some(d) = self.state_dir.get() {
            opts.journal = Some(d.journal(self.id(), &rec.request, vm.config()));
        }
        let job = Job::spawn_resumed(vm, rec.request.to, rec.resume, opts, self.events.clone())?;
        *self.migration.lock().unwrap() = Some(job.clone());
        Ok(job)
    }

    /// Lifecycle state as the API reports it.
    pub fn state_name(&self) -> &'static str {
        let Some(vm) = self.vm() else {
            return self.before;
        };
        if let Some(job) = self.migration.lock().unwrap().as_ref() {
            if job.running() {
                return vm_state::MIGRATING;
            }
            if job.handed_over() {
                return vm_state::MIGRATED;
            }
        }
        match vm.run_state() {
            RunState::Running => vm_state::RUNNING,
            RunState::Paused => vm_state::PAUSED,
            RunState::Exited(_) => vm_state::EXITED,
        }
    }

    /// Pauses every vCPU (an operator's request).
    pub fn pause(&self) -> Result<(), StateError> {
        let vm = self.operable("pause")?;
        let was_running = vm.run_state() == RunState::Running;
        vm.pause().map_err(StateError::Vmm)?;
        if was_running {
            self.events.publish(EventKind::VmPaused {
                cause: Cause::Operator,
            });
        }
        Ok(())
    }

    /// Resumes a paused VM (an operator's request).
    pub fn resume(&self) -> Result<(), StateError> {
        let vm = self.operable("resume")?;
        let was_paused = vm.run_state() == RunState::Paused;
        vm.resume().map_err(StateError::Vmm)?;
        if was_paused {
            self.events.publish(EventKind::VmResumed {
                cause: Cause::Operator,
            });
        }
        Ok(())
    }

    /// The VM, if it is running or paused here.
    fn operable(&self, verb: &'static str) -> Result<&Arc<Vm>, StateError> {
        match (self.state_name(), self.vm()) {
            (vm_state::RUNNING | vm_state::PAUSED, Some(vm)) => Ok(vm),
            (state, _) => Err(StateError::Wrong { verb, state }),
        }
    }

    /// The guest's latest counters from its status page, if it publishes them.
    pub fn guest_counters(&self) -> Option<api::types::GuestCounters> {
        let addr = status_page_addr(self.vm()?)?;
        // SAFETY: the page lies inside the low RAM mapping, which lives as
        // long as the VM, and the VM lives as long as `self`; the reader
        // copes with concurrent guest writes.
        let page = unsafe {
            std::slice::from_raw_parts(addr as usize as *const u8, guest::status::PAGE_SIZE)
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
        let vm = self.vm().context("the VM does not exist yet")?;
        let start = Instant::now();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".partial");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp)
            .with_context(|| format!("cannot create snapshot {}", path.display()))?;
        // The VMM pauses a running VM while it writes, and resumes it after.
        let was_running = vm.run_state() == RunState::Running;
        if was_running {
            self.events.publish(EventKind::VmPaused {
                cause: Cause::Snapshot,
            });
        }
        let result = vmm::snapshot::save(vm, &file)
            .map_err(anyhow::Error::from)
            .and_then(|stats| {
                let mut f = &file;
                f.flush()?;
                file.sync_all()?;
                Ok(stats)
            });
        if was_running && vm.run_state() == RunState::Running {
            self.events.publish(EventKind::VmResumed {
                cause: Cause::Snapshot,
            });
        }
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
