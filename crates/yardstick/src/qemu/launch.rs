//! A QEMU process being started: its stderr collected, its serial and QMP
//! sockets connected, and killed on drop until it is handed over.

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::qmp::Qmp;

/// What QEMU wrote to stderr, collected by a thread.
pub(super) type Stderr = Arc<Mutex<String>>;

/// A started QEMU that is not yet ready for use.
pub(super) struct Launch {
    child: Option<Child>,
    stderr: Stderr,
    deadline: Instant,
    timeout: Duration,
}

impl Launch {
    /// Spawns `binary` with `args`; connecting must be done within `timeout`.
    pub fn spawn(binary: &Path, args: &[String], timeout: Duration) -> Result<Launch, Error> {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::QemuNotFound {
                binary: binary.display().to_string(),
                source,
            })?;
        let stderr = Stderr::default();
        if let Some(pipe) = child.stderr.take() {
            collect(pipe, stderr.clone());
        }
        Ok(Launch {
            child: Some(child),
            stderr,
            deadline: Instant::now() + timeout,
            timeout,
        })
    }

    /// Fails with QEMU's exit status and stderr if it has exited.
    fn check_alive(&mut self, during: &str) -> Result<(), Error> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        if let Ok(Some(status)) = child.try_wait() {
            self.child = None;
            // Give the stderr thread a moment to collect the last words.
            std::thread::sleep(Duration::from_millis(20));
            return Err(Error::QemuExited {
                status: status.to_string(),
                during: during.to_string(),
                stderr: lock(&self.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    fn check_deadline(&self, what: impl FnOnce() -> String) -> Result<(), Error> {
        if Instant::now() > self.deadline {
            return Err(Error::Timeout {
                what: what(),
                after: self.timeout,
            });
        }
        Ok(())
    }

    /// Accepts QEMU's connection to the (non-blocking) serial `listener`.
    pub fn accept_serial(&mut self, listener: &UnixListener) -> Result<UnixStream, Error> {
        loop {
            match listener.accept() {
                Ok((s, _)) => return Ok(s),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Error::io("accepting QEMU's serial connection")(e)),
            }
            self.check_alive("connecting its serial port")?;
            self.check_deadline(|| "QEMU to connect its serial port".into())?;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Opens a QMP session on the socket `path`, each reply bounded by
    /// `reply_timeout`; `during` names the step in errors.
    pub fn connect_qmp(
        &mut self,
        path: &Path,
        reply_timeout: Duration,
        during: &str,
    ) -> Result<Qmp, Error> {
        loop {
            match UnixStream::connect(path) {
                Ok(s) => match Qmp::from_stream(s, reply_timeout) {
                    Ok(q) => return Ok(q),
                    Err(e) => {
                        // QEMU exiting right after start (e.g. the kernel is
                        // not Multiboot) shows as a QMP failure: report the
                        // exit and its stderr instead.
                        let waited = Instant::now();
                        while waited.elapsed() < Duration::from_millis(500) {
                            self.check_alive(during)?;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        return Err(e.into());
                    }
                },
                Err(_) => {
                    self.check_alive(during)?;
                    self.check_deadline(|| format!("QEMU's QMP socket {}", path.display()))?;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// The started process and its stderr; no longer killed on drop.
    pub fn finish(mut self) -> (Child, Stderr) {
        let child = self.child.take().expect("a launch holds its child");
        (child, self.stderr.clone())
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Appends everything read from `pipe` to `into`, on a thread.
fn collect(mut pipe: impl Read + Send + 'static, into: Stderr) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            lock(&into).push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
}

/// The collected text, even if a collecting thread panicked.
pub(super) fn lock(s: &Stderr) -> std::sync::MutexGuard<'_, String> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}
