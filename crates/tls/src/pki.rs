//! The cluster's certificates: one CA, and per host a certificate and key
//! it signed (`ferry pki init`).
//!
//! Layout under the directory given:
//!
//! ```text
//! ca.pem  ca-key.pem          the CA (keep ca-key.pem off the hosts)
//! <host>/ca.pem               what host <host> is given (--tls-dir DIR/<host>)
//! <host>/cert.pem
//! <host>/key.pem
//! ```
//!
//! Keys are written 0600, host directories 0700; nothing existing is ever
//! overwritten.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::error::TlsError;

/// The CA's certificate, in the top directory and in each host's.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key (top directory only).
pub const CA_KEY: &str = "ca-key.pem";
/// A host's certificate.
pub const CERT: &str = "cert.pem";
/// A host's private key.
pub const KEY: &str = "key.pem";

/// How long certificates from [`init`] are valid.
pub const VALIDITY_DAYS: i64 = 365;
/// Longest host name (one DNS label).
pub const MAX_HOST_LEN: usize = 63;

/// When a certificate is valid.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clocks of hosts differ a little) for `days`.
    pub fn days(days: i64) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }
}

/// Checks a host name: a DNS label of lowercase letters, digits and '-',
/// not starting or ending with '-'.
pub fn check_host(name: &str) -> Result<(), TlsError> {
    let bad = |why| {
        Err(TlsError::BadHost {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_HOST_LEN {
        return bad("it is longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("use lowercase letters, digits and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("it starts or ends with '-'");
    }
    Ok(())
}

/// A cluster CA in memory, able to sign host certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A host's certificate and key, PEM.
pub struct HostCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    /// A new CA with a fresh key, named `name`.
    pub fn new(name: &str, validity: Validity) -> Result<Ca, TlsError> {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = validity.not_before;
        p.not_after = validity.not_after;
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate()?)?;
        Ok(Ca { issuer })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A certificate for host `name` (both server and client use), with a
    /// fresh key.
    pub fn issue(&self, name: &str, validity: Validity) -> Result<HostCert, TlsError> {
        check_host(name)?;
        let mut p = CertificateParams::new(vec![name.to_string()])?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = validity.not_before;
        p.not_after = validity.not_after;
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(HostCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes host `name`'s directory `dir` (which must not exist): this
    /// CA's certificate, a new host certificate and its key.
    pub fn write_host(&self, dir: &Path, name: &str, validity: Validity) -> Result<(), TlsError> {
        let host = self.issue(name, validity)?;
        if dir.exists() {
            return Err(TlsError::Exists {
                path: dir.to_path_buf(),
            });
        }
        private_dir(dir, false)?;
        write_new(&dir.join(CA_CERT), &self.cert_pem(), 0o644)?;
        write_new(&dir.join(CERT), &host.cert_pem, 0o644)?;
        write_new(&dir.join(KEY), &host.key_pem, 0o600)
    }
}

/// Creates `dir` readable by its owner only (with its parents if
/// `recursive`; then it may exist already).
fn private_dir(dir: &Path, recursive: bool) -> Result<(), TlsError> {
    DirBuilder::new()
        .recursive(recursive)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes `text` to a file that must not exist yet, with `mode`.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => TlsError::Exists {
                path: path.to_path_buf(),
            },
            _ => TlsError::Write {
                path: path.to_path_buf(),
                source,
            },
        })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Creates a cluster CA and a certificate for each of `hosts` under `dir`
/// (created if missing), valid [`VALIDITY_DAYS`]. Checks every name and
/// that nothing it would write exists before writing anything. Returns
/// the host directories.
pub fn init(dir: &Path, hosts: &[String]) -> Result<Vec<PathBuf>, TlsError> {
    if hosts.is_empty() {
        return Err(TlsError::NoHosts);
    }
    for (i, h) in hosts.iter().enumerate() {
        check_host(h)?;
        if hosts[..i].contains(h) {
            return Err(TlsError::DuplicateHost(h.clone()));
        }
    }
    let host_dirs: Vec<PathBuf> = hosts.iter().map(|h| dir.join(h)).collect();
    let ours = [dir.join(CA_CERT), dir.join(CA_KEY)];
    if let Some(p) = ours.iter().chain(&host_dirs).find(|p| p.exists()) {
        return Err(TlsError::Exists { path: p.clone() });
    }
    private_dir(dir, true)?;
    let validity = Validity::days(VALIDITY_DAYS);
    // Named by its creation time, so that two clusters' CAs differ by name
    // too and a stranger's certificate reads "unknown issuer".
    let name = format!(
        "Ferry cluster CA {}",
        OffsetDateTime::now_utc().unix_timestamp()
    );
    let ca = Ca::new(&name, validity)?;
    write_new(&dir.join(CA_KEY), &ca.key_pem(), 0o600)?;
    write_new(&dir.join(CA_CERT), &ca.cert_pem(), 0o644)?;
    for (h, d) in hosts.iter().zip(&host_dirs) {
        ca.write_host(d, h, validity)?;
    }
    Ok(host_dirs)
}
