//! The destination: `ferry receive`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::source::StateBase;
use super::{PATIENCE, Proc, Vm, free_port, read_serial, state_of, status, wait_for};

/// How `ferry receive` logs a peer it refused before authentication.
pub const REFUSED: &str = "refused a connection before authentication";
/// How it sums up refusals it did not log one by one.
pub const REFUSED_MORE: &str = "more connections before authentication";

/// The destination: `ferry receive` on a fresh loopback port.
pub struct Dest {
    pub proc: Proc,
    pub addr: String,
    pub sock: PathBuf,
    pub serial: PathBuf,
    /// Its own state directory base (unless the test gave one), removed with it.
    pub(super) state: Option<StateBase>,
}

impl Dest {
    pub fn start(dir: &Path, name: &str, secret: &Path, extra: &[&str]) -> Dest {
        let addr = format!("127.0.0.1:{}", free_port());
        let sock = dir.join(format!("{name}.sock"));
        let serial = dir.join(format!("{name}.log"));
        let mut args = vec![
            "receive",
            "--listen",
            &addr,
            "--secret-file",
            secret.to_str().unwrap(),
            "--api",
            sock.to_str().unwrap(),
            "--serial",
            serial.to_str().unwrap(),
            "--timestamps",
        ];
        args.extend_from_slice(extra);
        let state = (!extra.contains(&"--state-dir")).then(StateBase::new);
        let state_arg = state.as_ref().map(|s| s.0.display().to_string());
        if let Some(a) = &state_arg {
            args.extend_from_slice(&["--state-dir", a]);
        }
        let mut proc = Proc::spawn(dir, name, &args);
        // Probing the port would use up its one connection: read stderr.
        wait_for("ferry receive to listen", PATIENCE, || {
            assert!(proc.alive(), "ferry receive exited: {}", proc.stderr_text());
            proc.stderr_text()
                .contains("waiting for a VM")
                .then_some(())
        });
        Dest {
            proc,
            addr,
            sock,
            serial,
            state,
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.addr.parse().unwrap()
    }

    pub fn state(&self) -> Option<String> {
        state_of(&self.sock)
    }

    /// Its lines about refused peers, so far.
    pub fn refusals(&self) -> Vec<String> {
        self.proc
            .stderr_text()
            .lines()
            .filter(|l| l.contains(REFUSED))
            .map(str::to_string)
            .collect()
    }

    /// Waits until it has logged a refusal naming every one of `words`;
    /// it still waits for its source.
    pub fn wait_refusal(&mut self, words: &[&str]) -> String {
        let line = wait_for(&format!("a refusal naming {words:?}"), PATIENCE, || {
            assert!(
                self.proc.alive(),
                "ferry receive exited: {}",
                self.proc.stderr_text()
            );
            self.refusals()
                .into_iter()
                .find(|l| words.iter().all(|w| l.contains(w)))
        });
        eprintln!("[{}] {line}", self.proc.name);
        line
    }

    /// The VM it received, as the source of the next migration.
    pub fn into_vm(self) -> Vm {
        Vm::adopt(self)
    }

    /// The destination gave up: exited non-zero, with one error line naming
    /// `words`, no API socket answering, nothing in its serial log.
    pub fn assert_discarded(&mut self, words: &[&str]) {
        self.proc.assert_failed_with(PATIENCE, words);
        assert!(
            status(&self.sock).is_none(),
            "the failed destination serves an API"
        );
        let log = read_serial(&self.serial);
        assert!(
            log.heartbeats.is_empty() && log.verify_ok == 0,
            "the failed destination ran guest code: {log:?}"
        );
    }
}
