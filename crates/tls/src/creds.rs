//! One host's credentials: the cluster CA it trusts and its own
//! certificate and key, as rustls configurations for both ends.

use std::fmt;
use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use crate::conn::Conn;
use crate::error::TlsError;
use crate::pki::{CA_CERT, CERT, KEY};
use crate::verify::ClusterVerifier;

/// The name a client puts in its handshake when it expects any member: no
/// SNI is sent and the server certificate is not matched against it
/// ([`crate::verify`]). `pki` never issues it (it has dots).
pub(crate) const ANY_MEMBER: &str = "member.ferry.invalid";

/// This host's TLS identity and the cluster CA, ready to connect and
/// accept (`--tls-dir`). Cheap to clone.
#[derive(Clone)]
pub struct Credentials {
    dir: PathBuf,
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    /// The host whose certificate a connection must show (see
    /// [`Credentials::expecting`]); `None`: any member of the cluster.
    peer: Option<ServerName<'static>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("dir", &self.dir)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

fn read(path: PathBuf) -> Result<(PathBuf, Vec<u8>), TlsError> {
    match std::fs::read(&path) {
        Ok(b) => Ok((path, b)),
        Err(source) => Err(TlsError::Read { path, source }),
    }
}

fn certs(path: PathBuf, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path,
            what: "certificate",
        });
    }
    Ok(certs)
}

impl Credentials {
    /// Reads `ca.pem`, `cert.pem` and `key.pem` from `dir` (as
    /// [`pki::init`](crate::pki::init) writes them for each host).
    pub fn load(dir: &Path) -> Result<Credentials, TlsError> {
        let (ca_path, ca) = read(dir.join(CA_CERT))?;
        let (cert_path, cert) = read(dir.join(CERT))?;
        let (key_path, key) = read(dir.join(KEY))?;
        let ca = certs(ca_path.clone(), &ca)?;
        let chain = certs(cert_path, &cert)?;
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|_| TlsError::Pem {
            path: key_path,
            what: "private key",
        })?;
        let config = |source| TlsError::Config {
            dir: dir.to_path_buf(),
            source,
        };
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots.add(c).map_err(config)?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server =
            server_config(&provider, &roots, chain.clone(), key.clone_key()).map_err(config)?;
        let client = client_config(&provider, &roots, chain, key).map_err(config)?;
        Ok(Credentials {
            dir: dir.to_path_buf(),
            client: Arc::new(client),
            server: Arc::new(server),
            peer: None,
        })
    }

    /// The directory the credentials came from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server end's configuration, for listeners that run their own
    /// TLS loop (HTTP).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server)
    }

    /// The same credentials, for connecting to `host` only: the server's
    /// certificate must also be issued for that name (as `pki init` issues
    /// each host's). How a source makes sure the destination an order
    /// names is the one that answers, not another member.
    pub fn expecting(&self, host: &str) -> Result<Credentials, TlsError> {
        let name = ServerName::try_from(host.to_string())
            .ok()
            .filter(|n| matches!(n, ServerName::DnsName(_)) && host != ANY_MEMBER)
            .ok_or_else(|| TlsError::HostName(host.to_string()))?;
        Ok(Credentials {
            peer: Some(name),
            ..self.clone()
        })
    }

    /// Runs the client end of the handshake on `tcp`, which must be done by
    /// `deadline`. Fails if the server's certificate is not the cluster's
    /// (or not the expected host's, [`Credentials::expecting`]).
    pub fn connect(&self, tcp: TcpStream, deadline: Instant) -> io::Result<Conn> {
        let name = self
            .peer
            .clone()
            .unwrap_or_else(|| ServerName::try_from(ANY_MEMBER).expect("a valid DNS name"));
        let c =
            ClientConnection::new(Arc::clone(&self.client), name).map_err(crate::conn::tls_io)?;
        Conn::handshake(tcp, c.into(), deadline)
    }

    /// Runs the server end of the handshake on `tcp`, which must be done by
    /// `deadline`. Fails if the client shows no certificate of the cluster's.
    pub fn accept(&self, tcp: TcpStream, deadline: Instant) -> io::Result<Conn> {
        let c = ServerConnection::new(Arc::clone(&self.server)).map_err(crate::conn::tls_io)?;
        Conn::handshake(tcp, c.into(), deadline)
    }
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    roots: &Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(provider))
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
    let mut c = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    // Every connection is a fresh full handshake: no tickets to resume with.
    c.send_tls13_tickets = 0;
    Ok(c)
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    roots: &Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig, rustls::Error> {
    let verifier = ClusterVerifier::new(
        Arc::clone(roots),
        provider.signature_verification_algorithms,
    );
    let mut c = ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)?;
    c.enable_sni = false;
    c.resumption = Resumption::disabled();
    Ok(c)
}
