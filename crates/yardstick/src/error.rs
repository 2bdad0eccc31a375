//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

use crate::qmp::QmpError;

/// Everything that can go wrong while driving QEMU or writing results.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The QEMU binary is missing or cannot be executed.
    #[error(
        "cannot run QEMU binary `{binary}`: {source} (install it, e.g. `apt-get install qemu-system-x86`)"
    )]
    QemuNotFound {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    /// /dev/kvm is missing or not accessible.
    #[error("/dev/kvm is not usable: {source} (QEMU measurements need KVM)")]
    Kvm {
        #[source]
        source: std::io::Error,
    },
    /// A file the configuration names does not exist.
    #[error("{what} {path} does not exist")]
    MissingFile { what: &'static str, path: PathBuf },
    /// The configuration is inconsistent.
    #[error("invalid QEMU configuration: {0}")]
    Config(String),
    /// An I/O operation of our own failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited while we still needed it.
    #[error("QEMU exited {status} while {during}; its stderr: {stderr}")]
    QemuExited {
        status: String,
        during: String,
        stderr: String,
    },
    /// Something we waited for did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    /// A QMP command or the QMP connection failed.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// QEMU reported something we cannot interpret.
    #[error("unexpected QEMU reply to {command}: {detail}")]
    Reply { command: String, detail: String },
    /// Rendering a plot failed.
    #[error("cannot draw plot {path}: {detail}")]
    Plot { path: PathBuf, detail: String },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
