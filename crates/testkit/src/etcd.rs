//! A real etcd for tests: one member on free loopback ports with its own
//! temporary data directory, stopped (killed and reaped) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{POLL, TempDir, free_port};

/// The etcd server binary (Debian's `etcd-server`), looked up on `PATH`.
pub const ETCD: &str = "etcd";

/// How long etcd may take to serve after it starts, on a loaded machine.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// Panics unless [`ETCD`] is on `PATH`; returns its path.
pub fn require_etcd() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(ETCD))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("these tests need {ETCD} on PATH (apt-get install etcd-server)"))
}

/// PEM files for an etcd that requires client certificates.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA that signs the clients' certificates.
    pub ca: PathBuf,
    /// The server's certificate (valid for 127.0.0.1) and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running etcd member.
pub struct Etcd {
    dir: TempDir,
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    tls: Option<EtcdTls>,
    starts: u32,
}

impl Etcd {
    /// Starts a plain (no TLS) member and waits until it serves.
    pub fn start(name: &str) -> Etcd {
        Self::launch(name, None)
    }

    /// Starts a member that serves only TLS clients with a certificate
    /// signed by `tls.ca`.
    pub fn start_tls(name: &str, tls: EtcdTls) -> Etcd {
        Self::launch(name, Some(tls))
    }

    fn launch(name: &str, tls: Option<EtcdTls>) -> Etcd {
        require_etcd();
        let mut etcd = Etcd {
            dir: TempDir::new(&format!("etcd-{name}")),
            child: None,
            client_port: 0,
            peer_port: 0,
            tls,
            starts: 0,
        };
        // A free port may be taken between the check and etcd's bind:
        // try fresh ports a few times.
        for _ in 0..3 {
            etcd.client_port = free_port();
            etcd.peer_port = free_port();
            if etcd.try_start() {
                return etcd;
            }
        }
        panic!("etcd did not start; its logs are in {}", etcd.dir.display());
    }

    /// Starts again after [`Etcd::kill`], on the same ports and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd is still running");
        if !self.try_start() {
            panic!(
                "etcd did not restart; its logs are in {}",
                self.dir.display()
            );
        }
    }

    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The member's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Kills the member at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn try_start(&mut self) -> bool {
        self.starts += 1;
        let log = self.dir.join(format!("etcd-{}.log", self.starts));
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(ETCD);
        cmd.args(["--name", "test", "--data-dir"])
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")]);
        if let Some(tls) = &self.tls {
            cmd.arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key);
        }
        let Ok(file) = std::fs::File::create(&log) else {
            return false;
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {ETCD}: {e}"));
        self.child = Some(child);
        if wait_ready(self.child.as_mut().unwrap(), &log) {
            return true;
        }
        self.kill();
        false
    }
}

/// Waits for etcd to say it serves clients; false if it exits or takes
/// longer than [`READY_LIMIT`].
fn wait_ready(child: &mut Child, log: &Path) -> bool {
    let end = Instant::now() + READY_LIMIT;
    while Instant::now() < end {
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains("ready to serve client requests"))
        {
            return true;
        }
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        std::thread::sleep(POLL);
    }
    false
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        // A failing test keeps the directory for its logs; the data (tens
        // of MiB of preallocated log) is of no use.
        let _ = std::fs::remove_dir_all(self.data_dir());
    }
}
