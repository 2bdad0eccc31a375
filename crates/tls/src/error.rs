//! What can go wrong creating or loading certificates.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Errors of [`pki`](crate::pki) and [`Credentials::load`](crate::Credentials::load);
/// Display gives one line.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} already exists; refusing to overwrite it", path.display())]
    Exists { path: PathBuf },
    #[error("{} holds no {what} in PEM form", path.display())]
    Pem { path: PathBuf, what: &'static str },
    #[error("'{name}' is not a valid host name: {why}")]
    BadHost { name: String, why: &'static str },
    #[error("'{0}' is not a host name a certificate can be checked against")]
    HostName(String),
    #[error("no host names given")]
    NoHosts,
    #[error("host '{0}' is given twice")]
    DuplicateHost(String),
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificates in {} cannot be used: {source}", dir.display())]
    Config {
        dir: PathBuf,
        #[source]
        source: rustls::Error,
    },
}
