//! A running QEMU process with its QMP session and serial log.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;
use tempfile::TempDir;

use super::QemuConfig;
use super::image::temp_dir;
use super::launch::{Launch, Stderr, lock};
use crate::error::Error;
use crate::qmp::Qmp;
use crate::serial::{self, SerialLine, SerialLog};

/// Where [`QemuConfig::shared_ram`] files live: memory, not disk.
const SHM: &str = "/dev/shm";

/// A running QEMU process with its QMP session and serial log.
pub struct Qemu {
    child: Child,
    qmp: Qmp,
    serial: SerialLog,
    serial_thread: Option<JoinHandle<()>>,
    stderr: Stderr,
    spawned_at: f64,
    incoming: Option<String>,
    exit: Option<ExitStatus>,
    /// The file backing guest RAM (with `shared_ram`), in its own
    /// directory in /dev/shm, removed with this value.
    ram: Option<(TempDir, PathBuf)>,
    _dir: TempDir,
}

impl std::fmt::Debug for Qemu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qemu")
            .field("pid", &self.child.id())
            .field("spawned_at", &self.spawned_at)
            .field("incoming", &self.incoming)
            .finish()
    }
}

impl Qemu {
    /// Starts QEMU for `config` and returns once its serial port and QMP
    /// are connected (the guest is already running then).
    pub fn spawn(config: &QemuConfig) -> Result<Qemu, Error> {
        Self::start(config, false)
    }

    /// Starts a migration destination for `config`: QEMU with
    /// `-incoming defer`, then QMP `migrate-incoming` on 127.0.0.1 with a
    /// port the kernel picks. [`Qemu::incoming_uri`] tells where to send.
    pub fn spawn_incoming(config: &QemuConfig) -> Result<Qemu, Error> {
        let mut q = Self::start(config, true)?;
        q.qmp
            .execute("migrate-incoming", Some(json!({"uri": "tcp:127.0.0.1:0"})))?;
        let info = q.qmp.execute("query-migrate", None)?;
        let addr = info["socket-address"]
            .as_array()
            .and_then(|a| a.first())
            .ok_or_else(|| Error::Reply {
                command: "query-migrate".into(),
                detail: format!("no socket-address on the destination: {info}"),
            })?;
        let host = addr["host"].as_str().unwrap_or("127.0.0.1");
        let port = match &addr["port"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        q.incoming = Some(format!("tcp:{host}:{port}"));
        Ok(q)
    }

    fn start(config: &QemuConfig, incoming: bool) -> Result<Qemu, Error> {
        config.check()?;
        let cpu = config.effective_cpu()?;
        let dir = temp_dir()?;
        let serial_sock = dir.path().join("serial.sock");
        let qmp_sock = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&serial_sock)
            .map_err(Error::io(format!("listening on {}", serial_sock.display())))?;
        listener
            .set_nonblocking(true)
            .map_err(Error::io("making the serial listener non-blocking"))?;

        let ram = if config.shared_ram {
            let d = tempfile::Builder::new()
                .prefix("yardstick-ram-")
                .tempdir_in(SHM)
                .map_err(Error::io(format!("creating a directory in {SHM}")))?;
            let f = d.path().join("ram");
            Some((d, f))
        } else {
            None
        };
        let ram_file = ram.as_ref().map(|(_, f)| f.as_path());
        let args = config.args(&cpu, &serial_sock, &qmp_sock, incoming, ram_file);
        let spawned_at = serial::now();
        // `launch` kills QEMU if starting fails half way.
        let mut launch = Launch::spawn(&config.binary, &args, config.start_timeout)?;
        let stream = launch.accept_serial(&listener)?;
        stream
            .set_nonblocking(false)
            .map_err(Error::io("configuring the serial socket"))?;
        let stamper = config.stamper.as_ref().map(|f| f());
        let (serial, serial_thread) = SerialLog::capture(stream, stamper);
        let qmp = launch.connect_qmp(&qmp_sock, config.qmp_timeout, "starting the guest")?;
        let (child, stderr) = launch.finish();
        Ok(Qemu {
            child,
            qmp,
            serial,
            serial_thread: Some(serial_thread),
            stderr,
            spawned_at,
            incoming: None,
            exit: None,
            ram,
            _dir: dir,
        })
    }

    /// The file backing the guest's RAM from guest-physical 0, when
    /// started with [`QemuConfig::shared_ram`].
    pub fn ram_file(&self) -> Option<&Path> {
        self.ram.as_ref().map(|(_, f)| f.as_path())
    }

    /// The QMP session.
    pub fn qmp(&mut self) -> &mut Qmp {
        &mut self.qmp
    }

    /// The serial log (lines keep arriving while QEMU runs).
    pub fn serial(&self) -> &SerialLog {
        &self.serial
    }

    /// Host wall time (UNIX seconds) just before QEMU was spawned.
    pub fn spawned_at(&self) -> f64 {
        self.spawned_at
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// For a destination: the URI to pass to `migrate`.
    pub fn incoming_uri(&self) -> Option<&str> {
        self.incoming.as_deref()
    }

    /// What QEMU wrote to stderr so far.
    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// Where QEMU maps guest-physical address `gpa` in its own memory (HMP
    /// `gpa2hva`, over QMP), e.g. for a sampler reading it with
    /// `process_vm_readv`.
    pub fn gpa_to_hva(&mut self, gpa: u64) -> Result<u64, Error> {
        let command = format!("gpa2hva {gpa:#x}");
        let r = self.qmp.execute(
            "human-monitor-command",
            Some(json!({ "command-line": command })),
        )?;
        let text = r.as_str().unwrap_or("");
        text.split_whitespace()
            .last()
            .and_then(|w| u64::from_str_radix(w.strip_prefix("0x")?, 16).ok())
            .ok_or_else(|| Error::Reply {
                command,
                detail: text.trim().to_string(),
            })
    }

    /// QMP `query-status`: `running`, `paused`, `inmigrate`, `postmigrate`...
    pub fn run_state(&mut self) -> Result<String, Error> {
        let r = self.qmp.execute("query-status", None)?;
        r["status"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::Reply {
                command: "query-status".into(),
                detail: r.to_string(),
            })
    }

    /// Waits for the first serial line at index `from` or later that
    /// satisfies `pred`; `what` names it in the error. Fails early when QEMU
    /// closes the serial port (it exited).
    pub fn wait_for_line(
        &mut self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl FnMut(&SerialLine) -> bool,
    ) -> Result<(usize, SerialLine), Error> {
        if let Some(found) = self.serial.wait_for(from, timeout, pred) {
            return Ok(found);
        }
        if self.serial.is_closed() {
            let status = self.wait_exit(Duration::from_secs(2)).ok();
            return Err(Error::QemuExited {
                status: status.map_or("(still running)".into(), |s| s.to_string()),
                during: format!("waiting for {what}"),
                stderr: self.stderr(),
            });
        }
        Err(Error::Timeout {
            what: format!("{what} on the guest's serial port"),
            after: timeout,
        })
    }

    /// Waits for the guest's first heartbeat line.
    pub fn wait_for_heartbeat(&mut self, timeout: Duration) -> Result<SerialLine, Error> {
        self.wait_for_line(0, timeout, "the first heartbeat", serial::is_heartbeat)
            .map(|(_, l)| l)
    }

    /// Waits for QEMU to exit on its own (e.g. the guest wrote to the exit
    /// port), then for the serial log to be complete.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        if let Some(s) = self.exit {
            return Ok(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(Error::io("waiting for QEMU"))?
            {
                self.exit = Some(status);
                if let Some(t) = self.serial_thread.take() {
                    let _ = t.join();
                }
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: "QEMU to exit".into(),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asks QEMU to quit over QMP and waits for it; kills it if that fails.
    pub fn quit(&mut self) {
        if self.exit.is_none() {
            let _ = self.qmp.execute("quit", None);
            if self.wait_exit(Duration::from_secs(5)).is_err() {
                self.kill();
            }
        }
    }

    /// Kills QEMU (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.exit = Some(status);
            }
        }
        if let Some(t) = self.serial_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The guest's value written to the isa-debug-exit port, from QEMU's exit
/// status (`(value << 1) | 1`); `None` for other exits (QMP quit, signal).
pub fn guest_exit_value(status: ExitStatus) -> Option<u8> {
    let code = status.code()?;
    (code & 1 == 1).then_some((code >> 1) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks() {
        let mut c = QemuConfig::new("/nonexistent/k.elf");
        c.memory_mib = 0;
        assert!(matches!(Qemu::spawn(&c).unwrap_err(), Error::Config(_)));
        c.memory_mib = 1;
        c.vcpus = 0;
        assert!(matches!(Qemu::spawn(&c).unwrap_err(), Error::Config(_)));
    }
}
