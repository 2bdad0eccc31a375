//! The source VM (`ferry run`) and the API answers of any Ferry process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use api::Client;
use serde_json::Value;

use super::{GUEST_ARGS, GUEST_MEMORY, PATIENCE, Proc, WS_PAGES, read_serial, wait_for};

/// `GET /api/v1/vm` as JSON, or None when nothing answers on the socket.
pub fn status(sock: &Path) -> Option<Value> {
    let c = Client::new(sock).with_timeout(Duration::from_secs(10));
    match c.get(api::routes::VM) {
        Ok((200, v)) => Some(v),
        _ => None,
    }
}

pub fn state_of(sock: &Path) -> Option<String> {
    status(sock).and_then(|v| v["state"].as_str().map(str::to_string))
}

pub(super) fn counter(v: &Value, name: &str) -> u64 {
    v["guest"][name].as_u64().unwrap_or(0)
}

/// The median of five readings of the write rate a guest publishes, a
/// rate window apart (0 for a reading without one).
pub fn guest_rate(sock: &Path) -> u64 {
    let mut r: Vec<u64> = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(250));
            status(sock).map_or(0, |v| counter(&v, "write_rate"))
        })
        .collect();
    r.sort_unstable();
    r[2]
}

/// A VM that runs or could run: the states in which a process holds it live.
pub fn holds_vm(state: &str) -> bool {
    matches!(state, "running" | "paused" | "migrating" | "booting")
}

/// The source: `ferry run` of the dirtier with an API socket.
pub struct Vm {
    pub proc: Proc,
    pub sock: PathBuf,
    pub serial: PathBuf,
    pub client: Client,
    /// The source's own state directory base, removed with it.
    _state: Option<StateBase>,
}

/// A `--state-dir` of the test's own on tmpfs: what a killed source
/// leaves there (guest memory) goes when the test ends.
pub struct StateBase(pub PathBuf);

impl StateBase {
    pub fn new() -> StateBase {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        StateBase(PathBuf::from(format!(
            "/dev/shm/ferry-test-{}-{n}",
            std::process::id()
        )))
    }
}

impl Drop for StateBase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Vm {
    /// The dirtier of [`GUEST_ARGS`].
    pub fn boot(dir: &Path, name: &str) -> Vm {
        Vm::boot_with(dir, name, GUEST_ARGS)
    }

    /// The dirtier with `guest_args` (its working set [`WS_PAGES`] pages).
    pub fn boot_with(dir: &Path, name: &str, guest_args: &str) -> Vm {
        Vm::boot_args(dir, name, guest_args, &[])
    }

    /// As [`Vm::boot_with`], with `extra` flags for `ferry run`.
    pub fn boot_args(dir: &Path, name: &str, guest_args: &str, extra: &[&str]) -> Vm {
        let sock = dir.join(format!("{name}.sock"));
        let serial = dir.join(format!("{name}.log"));
        let state = (!extra.contains(&"--state-dir")).then(StateBase::new);
        let state_arg = state.as_ref().map(|s| s.0.display().to_string());
        let state_args: Vec<&str> = match &state_arg {
            Some(a) => vec!["--state-dir", a],
            None => Vec::new(),
        };
        let proc = Proc::spawn(
            dir,
            name,
            &[
                &[
                    "run",
                    "--guest",
                    "dirtier",
                    "--append",
                    guest_args,
                    "--memory",
                    GUEST_MEMORY,
                    "--api",
                    sock.to_str().unwrap(),
                    "--serial",
                    serial.to_str().unwrap(),
                    "--timestamps",
                ],
                extra,
                &state_args[..],
            ]
            .concat(),
        );
        let mut vm = Vm {
            client: Client::new(&sock).with_timeout(Duration::from_secs(10)),
            proc,
            sock,
            serial,
            _state: state,
        };
        // Running, the guest has verified once, and it has written as many
        // pages as its working set holds, so memory is mostly data, not zero.
        wait_for(
            "the source VM to boot and fill its working set",
            PATIENCE,
            || {
                if !vm.proc.alive() {
                    panic!("ferry run exited early: {}", vm.proc.stderr_text());
                }
                let v = status(&vm.sock)?;
                (v["state"] == "running"
                    && counter(&v, "verify_passes") >= 1
                    && counter(&v, "pages_written") >= WS_PAGES)
                    .then_some(())
            },
        );
        vm
    }

    /// The VM a destination received, as the source of the next migration.
    pub fn adopt(dest: super::Dest) -> Vm {
        Vm {
            client: Client::new(&dest.sock).with_timeout(Duration::from_secs(10)),
            proc: dest.proc,
            sock: dest.sock,
            serial: dest.serial,
            _state: dest.state,
        }
    }

    pub fn state(&self) -> Option<String> {
        state_of(&self.sock)
    }

    /// The guest's own write rate (pages/s): the median of five readings
    /// of its status page, a rate window apart.
    pub fn guest_rate(&self) -> u64 {
        guest_rate(&self.sock)
    }

    /// `GET /api/v1/vm.migrate` as JSON.
    pub fn migration(&self) -> Option<Value> {
        match self.client.get(api::routes::VM_MIGRATE) {
            Ok((200, v)) => Some(v),
            _ => None,
        }
    }

    /// Waits until the running migration's progress satisfies `pred`
    /// (phase name, round, bytes sent); panics if it ends first.
    pub fn wait_progress(&self, what: &str, pred: impl Fn(&str, u64, u64) -> bool) -> Value {
        wait_for(what, PATIENCE, || {
            let m = self.migration()?;
            let p = &m["progress"];
            let phase = p["phase"].as_str().unwrap_or("");
            if pred(phase, p["round"].as_u64()?, p["bytes_sent"].as_u64()?) {
                return Some(m);
            }
            assert!(m["done"] != true, "the migration ended before {what}: {m}");
            None
        })
    }

    /// After a failed attempt: the VM runs on the source (not paused), its
    /// heartbeat advances, a new `VERIFY ok` appears in its log, and no
    /// `VERIFY FAIL` anywhere.
    pub fn assert_running_and_healthy(&mut self) {
        let v = wait_for("the source VM to run again", PATIENCE, || {
            assert!(
                self.proc.alive(),
                "the source process died: {}",
                self.proc.stderr_text()
            );
            let v = status(&self.sock)?;
            (v["state"] == "running").then_some(v)
        });
        let hb = counter(&v, "heartbeat_seq");
        let passes = counter(&v, "verify_passes");
        let logged = read_serial(&self.serial).verify_ok;
        wait_for(
            "heartbeats, a verify pass and a logged VERIFY ok on the source",
            PATIENCE,
            || {
                let v = status(&self.sock)?;
                assert_eq!(v["state"], "running", "the source VM stopped running: {v}");
                assert_eq!(
                    counter(&v, "verify_failures"),
                    0,
                    "guest verification failed: {v}"
                );
                let log = read_serial(&self.serial);
                (counter(&v, "heartbeat_seq") > hb
                    && counter(&v, "verify_passes") > passes
                    && log.verify_ok > logged)
                    .then_some(())
            },
        );
        let log = read_serial(&self.serial);
        assert!(
            log.verify_fail.is_empty(),
            "VERIFY FAIL on the source: {:?}",
            log.verify_fail
        );
    }

    /// Starts `ferry migrate --json` in the background.
    pub fn start_migrate(
        &self,
        dir: &Path,
        name: &str,
        to: &str,
        secret: &Path,
        extra: &[&str],
    ) -> Proc {
        let mut args = vec![
            "migrate",
            "--api",
            self.sock.to_str().unwrap(),
            "--to",
            to,
            "--secret-file",
            secret.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let mut p = Proc::spawn(dir, name, &args);
        // The job exists once the API has accepted it (or the client failed).
        wait_for("the migration to start", PATIENCE, || {
            if !p.alive() {
                return Some(());
            }
            self.migration().filter(|m| m["to"] == to).map(|_| ())
        });
        p
    }
}
