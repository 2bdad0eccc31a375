//! Ferry's one test kit: the helpers every crate's tests share. A
//! dev-dependency only, never a normal one, and it depends on no Ferry crate
//! so any crate's tests can use it.
//!
//! - [`require_kvm`], [`require_qemu`]: tests that need them fail (never
//!   skip) with one clear message when they are missing.
//! - [`TempDir`]: a temporary directory, kept when the test fails.
//! - [`free_port`], [`RogueServer`], [`connect_from`]: loopback peers for
//!   network tests, from any loopback address.
//! - [`wait_for`]: polling with a bounded limit, never a bare sleep.
//! - [`random_bytes`]: non-cryptographic bytes for garbage and test secrets.
//! - [`Etcd`], [`require_etcd`]: a real etcd member on free loopback ports.
//!
//! The fault-injecting migration proxy is `migrate::faults`: it speaks
//! Ferry's frames, so it lives beside them.

mod dir;
mod etcd;
mod net;
mod require;
mod wait;

pub use dir::TempDir;
pub use etcd::{ETCD, Etcd, EtcdTls, require_etcd};
pub use net::{RogueServer, connect_from, free_port};
pub use require::{QEMU, require_kvm, require_qemu};
pub use wait::{POLL, random_bytes, wait_for};

#[cfg(test)]
mod tests {
    /// The kit stays out of every crate's build: only `[dev-dependencies]`
    /// may name it.
    #[test]
    fn testkit_is_only_a_dev_dependency() {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut users = 0;
        for entry in std::fs::read_dir(&crates).unwrap() {
            let manifest = entry.unwrap().path().join("Cargo.toml");
            let Ok(text) = std::fs::read_to_string(&manifest) else {
                continue;
            };
            let mut section = "";
            for line in text.lines().map(str::trim) {
                if line.starts_with('[') {
                    section = line;
                } else if line.starts_with("testkit") {
                    assert_eq!(
                        section,
                        "[dev-dependencies]",
                        "{}: testkit must be a dev-dependency only",
                        manifest.display()
                    );
                    users += 1;
                }
            }
        }
        assert!(users > 0, "no crate uses testkit");
    }
}
