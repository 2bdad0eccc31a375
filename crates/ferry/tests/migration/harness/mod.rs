//! Harness for the migration safety tests: real `ferry` processes (source
//! `run`, destination `receive`, client `migrate`) in a temporary directory,
//! the fault-injecting proxy (`migrate::faults`), and the checks behind
//! "exactly one copy of the VM runs and its integrity check passes".

#![allow(dead_code)]

mod checks;
mod dest;
mod log;
mod process;
mod source;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub use checks::*;
pub use dest::{Dest, REFUSED_MORE};
pub use log::{Serial, read_serial};
pub use migrate::faults::{Action, Dir, Fault, Proxy, Spot};
pub use process::{Proc, assert_no_panic};
pub use source::{StateBase, Vm, guest_rate, holds_vm, state_of, status};
pub use testkit::{
    RogueServer, TempDir, connect_from, free_port, random_bytes, require_kvm, wait_for,
};
pub use vmstate::record::kind::{PAGES, STATE};
pub use wire::kind::{COMMIT, RESUMED};

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// Guest used by every test: a 32 MiB working set written at 5000 pages/s
/// (about 20 MB/s, close to a 200 Mbit/s link, so pre-copy takes several
/// rounds) and verified every 500 ms.
pub const GUEST_ARGS: &str = "ws=32M rate=5000 verify=500ms";
pub const GUEST_MEMORY: &str = "256M";
/// Pages in the working set of [`GUEST_ARGS`].
pub const WS_PAGES: u64 = (32 << 20) / 4096;
/// Slow link for failure tests: a migration lasts several seconds.
pub const SLOW: &str = "200Mbit";
/// Pre-copy that never converges: a 1 us target no real switchover meets,
/// with the downtime strategy, on a [`SLOW`] link that keeps rounds long.
pub const NEVER: [&str; 6] = [
    "--strategy",
    "downtime",
    "--max-downtime",
    "1us",
    "--max-bandwidth",
    SLOW,
];

/// Longest wait for anything that should happen soon (noisy, shared machine).
pub const PATIENCE: Duration = Duration::from_secs(40);

/// Tests that start VMs run one at a time: two cores, and timings of one
/// migration must not be disturbed by another.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    require_kvm();
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Test secrets in a [`TempDir`].
pub trait Secrets {
    /// Writes a fresh random 64-hex-digit migration secret, returns its path.
    fn secret(&self, name: &str) -> PathBuf;
}

impl Secrets for TempDir {
    fn secret(&self, name: &str) -> PathBuf {
        let hex: String = random_bytes(32)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let p = self.join(name);
        std::fs::write(&p, hex + "\n").unwrap();
        p
    }
}

/// Waits until `proxy` has injected its fault.
pub fn wait_fired(proxy: &Proxy) {
    assert!(
        proxy.wait_fired(PATIENCE),
        "the proxy's fault did not fire within {PATIENCE:?}"
    );
}

/// Starts a proxy to `target` injecting `fault`.
pub fn start_proxy(target: std::net::SocketAddr, fault: Fault) -> Proxy {
    Proxy::start(target, Some(fault)).expect("the fault proxy starts")
}
