//! This process hosting its one VM: the [`Instance`], its API socket
//! (bound before the VM exists, so it answers while the guest boots),
//! SIGTERM/SIGINT handled as `ferry ctl shutdown`, and the wait for the VM
//! to end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::events::EventKind;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use vmm::{ExitReason, Vm};

use crate::instance::Instance;

/// How long the API keeps answering after a completed migration, for the
/// migrating client to read the report and say `vm.shutdown`.
const REPORT_GRACE: Duration = Duration::from_secs(60);
/// How long followers of the event stream get to read the last events.
const EVENTS_DRAIN: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(100);

/// What every process that hosts a VM is told (`run`, `restore`, `receive`).
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    /// Serve the control API on this Unix socket; it answers before the
    /// guest runs (state booting, or incoming for a receiver).
    pub api: Option<PathBuf>,
    /// The VM's identity in the API, its events and the logs (see
    /// [`check_name`]). Default: a random UUID.
    pub name: Option<String>,
}

/// How the hosted VM ended, when it ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The guest ended through the exit port with this status.
    GuestExit(i32),
    /// Shut down on request (API or signal), or before any VM arrived.
    ShutDown,
    /// Migrated away: the VM runs on the destination.
    Migrated,
    /// Commit was sent but not acknowledged: an operator checked the
    /// destination and asked for the shutdown (docs/PROTOCOL.md).
    InDoubt,
    /// Post-copy was interrupted before the destination held every page:
    /// the VM ran nowhere and an operator asked for the shutdown
    /// (docs/PROTOCOL.md, "Post-copy failures").
    Interrupted,
}

/// Checks a VM name: 1 to 64 letters, digits, '.', '_' or '-'.
pub fn check_name(s: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if s.is_empty() || s.len() > 64 || !s.chars().all(ok) {
        return Err(format!(
            "'{s}' is not a valid name: use 1 to 64 letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(s.to_string())
}

/// The hosted VM and its API, for the life of the process.
pub struct Hosting {
    pub instance: Arc<Instance>,
    server: Option<api::Server>,
    /// Shutdown requests that do not count against the VM (see
    /// [`Hosting::forgive_shutdowns`]).
    forgiven: u64,
}

impl Hosting {
    /// Creates the instance (state `before`), binds its API socket and
    /// turns SIGTERM/SIGINT into shutdown requests. Fails, before anything
    /// boots, if a live server already answers on the socket.
    pub fn start(config: &HostConfig, before: &'static str) -> anyhow::Result<Hosting> {
        let id = config
            .name
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let instance = Instance::new(&id, before);
        let server = match &config.api {
            Some(path) => Some(crate::control::start(instance.clone(), path)?),
            None => None,
        };
        forward_signals(instance.clone())?;
        Ok(Hosting {
            instance,
            server,
            forgiven: 0,
        })
    }

    /// The shutdown requests made so far do not stop the VM about to run:
    /// for a VM that arrived although a shutdown was asked for during its
    /// incoming migration (stopping it now would lose it: the source has
    /// handed it over).
    pub fn forgive_shutdowns(&mut self) {
        self.forgiven = self.instance.shutdown_requests();
    }

    /// Runs `vm` until it ends; an error if it crashed.
    pub fn run(self, vm: Vm) -> anyhow::Result<Ended> {
        self.instance.attach(vm);
        self.wait()
    }

    /// Takes up the post-copy a killed source process left in `dir`
    /// (`ferry run --recover`): `vm` holds its memory, retired here, and
    /// runs here again only if the destination is lost too.
    pub fn recover(
        self,
        vm: Vm,
        dir: Arc<crate::statedir::StateDir>,
        rec: crate::statedir::Recovery,
    ) -> anyhow::Result<Ended> {
        vm.retire();
        self.instance.set_state_dir(dir);
        self.instance.attach(vm);
        self.instance
            .resume_migration(rec)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.wait()
    }

    /// Waits for the attached VM to end; the state directory goes then.
    fn wait(self) -> anyhow::Result<Ended> {
        let ended = self.wait_attached();
        self.instance.remove_state_dir();
        ended
    }

    fn wait_attached(&self) -> anyhow::Result<Ended> {
        let host = self.instance.clone();
        let vm = host.vm().expect("attached").clone();
        let reason = loop {
            if let Some(r) = vm.wait(Some(POLL)) {
                if r != ExitReason::Migrated {
                    break r;
                }
                // Retired at Commit: told once the migration has ended too.
                wait_for_job(&host);
                if matches!(vm.run_state(), vmm::RunState::Exited(_)) {
                    break r;
                }
                // A post-copy that broke gave the VM back: it runs here on.
                continue;
            }
            // A migration before Commit was cancelled by the request and
            // rolls back first; one past Commit ends with the VM retired.
            if host.shutdown_requests() > self.forgiven && !host.migrating() {
                vm.stop(ExitReason::Stopped);
            }
        };
        host.events().publish(stopped(&reason));
        match reason {
            ExitReason::Guest(code) => Ok(Ended::GuestExit(code)),
            ExitReason::Crashed(msg) => anyhow::bail!("{msg}"),
            ExitReason::Stopped => Ok(Ended::ShutDown),
            ExitReason::Migrated => Ok(after_migration(&host)),
        }
    }
}

impl Drop for Hosting {
    /// Followers read the last events, then the socket goes.
    fn drop(&mut self) {
        self.instance.events().close(EVENTS_DRAIN);
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

/// The event that says how the VM ended.
fn stopped(reason: &ExitReason) -> EventKind {
    let (reason, exit_status, error) = match reason {
        ExitReason::Guest(code) => ("guest-exit", Some(*code), None),
        ExitReason::Crashed(msg) => ("crashed", None, Some(msg.clone())),
        ExitReason::Stopped => ("shutdown", None, None),
        ExitReason::Migrated => ("migrated", None, None),
    };
    EventKind::VmStopped {
        reason: reason.to_string(),
        exit_status,
        error,
    }
}

/// The VM was retired when Commit went out and the job has ended: waits
/// for the operator's word (in doubt) or the client's `vm.shutdown`.
fn after_migration(host: &Instance) -> Ended {
    let job = host.migration();
    let status = job.as_ref().map(|j| j.status());
    let to = status.as_ref().map(|s| s.to.clone()).unwrap_or_default();
    let location = status
        .as_ref()
        .and_then(|s| s.report.as_ref())
        .map(|r| r.vm_location);
    if location != Some(migrate::VmLocation::Destination) {
        // The retired VM's memory may be the only copy: keep it until an
        // operator who checked the destination asks again, even if a
        // shutdown was asked for before the doubt was known.
        let (what, code) = if location == Some(migrate::VmLocation::Nowhere) {
            ("post-copy was interrupted", Ended::Interrupted)
        } else {
            ("the commit is in doubt", Ended::InDoubt)
        };
        tracing::warn!(vm = %host.id(), to = %to, "{what}; keeping the stopped VM until `ferry ctl shutdown`");
        let asked = host.shutdown_requests();
        while host.shutdown_requests() == asked {
            std::thread::sleep(POLL);
        }
        tracing::info!(vm = %host.id(), "shut down by the operator; the VM's memory here is released");
        return code;
    }
    let deadline = Instant::now() + REPORT_GRACE;
    while !host.shutdown_requested() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ended::Migrated
}

/// Waits for the migration job, if any, to end.
fn wait_for_job(host: &Instance) {
    while host.migrating() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM and SIGINT ask for a shutdown, as `ferry ctl shutdown` does.
fn forward_signals(host: Arc<Instance>) -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
                tracing::info!(vm = %host.id(), signal = name, "{name} received: shutting down as `ferry ctl shutdown` would");
                host.request_shutdown();
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_checked() {
        for good in ["web-1", "a", "vm_2.prod", &"x".repeat(64)] {
            assert_eq!(check_name(good).unwrap(), good);
        }
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(check_name(bad).unwrap_err().contains("not a valid name"));
        }
    }
}
