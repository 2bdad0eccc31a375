//! Where the store is and how to reach it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Result, StoreError};

/// How long any call waits for the store before it fails with
/// [`StoreError::Timeout`]: a manager or agent loop never hangs on a store
/// that is down.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);

/// Which store to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Etcd(EtcdConfig),
    /// The embedded store served on a Unix socket by
    /// [`crate::EmbeddedServer`].
    Embedded {
        socket: PathBuf,
        deadline: Duration,
    },
}

/// An etcd v3 cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `host:port`, `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// Mutual TLS; required unless every endpoint is on loopback.
    pub tls: Option<TlsFiles>,
    pub deadline: Duration,
}

/// PEM files for mutual TLS with etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed etcd's server certificate.
    pub ca: PathBuf,
    /// This client's certificate, signed by a CA etcd trusts.
    pub cert: PathBuf,
    /// This client's private key.
    pub key: PathBuf,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            tls: None,
            deadline: DEFAULT_DEADLINE,
        }
    }

    pub fn with_tls(mut self, tls: TlsFiles) -> EtcdConfig {
        self.tls = Some(tls);
        self
    }

    pub fn with_deadline(mut self, deadline: Duration) -> EtcdConfig {
        self.deadline = deadline;
        self
    }

    /// The endpoints as URLs (`https://` with TLS, `http://` without),
    /// checked: cluster state never crosses a network in clear, so plain
    /// endpoints must be on loopback.
    pub(crate) fn urls(&self) -> Result<Vec<String>> {
        if self.endpoints.is_empty() {
            return Err(StoreError::InvalidConfig("no etcd endpoint".into()));
        }
        if self.deadline.is_zero() {
            return Err(StoreError::InvalidConfig("a zero deadline".into()));
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut urls = Vec::new();
        for e in &self.endpoints {
            let (given, rest) = match e.split_once("://") {
                Some((s, rest)) => (Some(s), rest),
                None => (None, e.as_str()),
            };
            if given.is_some_and(|s| s != scheme) {
                return Err(StoreError::InvalidConfig(format!(
                    "endpoint {e}: the scheme must be {scheme} ({})",
                    if self.tls.is_some() {
                        "TLS files are given"
                    } else {
                        "no TLS files are given"
                    }
                )));
            }
            let host = host_of(rest).ok_or_else(|| {
                StoreError::InvalidConfig(format!("endpoint {e:?} is not host:port"))
            })?;
            if self.tls.is_none() && !is_loopback(host) {
                return Err(StoreError::InvalidConfig(format!(
                    "endpoint {e} is not on loopback: mutual TLS is required (CA, certificate, key)"
                )));
            }
            urls.push(format!("{scheme}://{rest}"));
        }
        Ok(urls)
    }
}

/// The host of `host:port` or `[v6]:port`, if the port is a number.
fn host_of(authority: &str) -> Option<&str> {
    let authority = authority.trim_end_matches('/');
    let (host, port) = authority.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then_some(host)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> TlsFiles {
        TlsFiles {
            ca: "ca.pem".into(),
            cert: "c.pem".into(),
            key: "k.pem".into(),
        }
    }

    #[test]
    fn plain_endpoints_only_on_loopback() {
        let ok = EtcdConfig::new(vec!["127.0.0.1:2379".into(), "http://[::1]:2379".into()]);
        assert_eq!(
            ok.urls().unwrap(),
            ["http://127.0.0.1:2379", "http://[::1]:2379"]
        );
        let remote = EtcdConfig::new(vec!["10.0.0.2:2379".into()]);
        let e = remote.urls().unwrap_err().to_string();
        assert!(e.contains("mutual TLS is required"), "{e}");
        let with = remote.with_tls(tls());
        assert_eq!(with.urls().unwrap(), ["https://10.0.0.2:2379"]);
    }

    #[test]
    fn bad_endpoints_are_refused() {
        for bad in ["", "host", "host:port", ":2379", "https://127.0.0.1:2379"] {
            let c = EtcdConfig::new(vec![bad.into()]);
            assert!(c.urls().is_err(), "{bad:?} accepted");
        }
        assert!(EtcdConfig::new(vec![]).urls().is_err());
        let tls_plain = EtcdConfig::new(vec!["http://127.0.0.1:1".into()]).with_tls(tls());
        assert!(tls_plain.urls().is_err());
    }
}
