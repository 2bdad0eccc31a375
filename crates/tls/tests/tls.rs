//! Mutual TLS over loopback: members talk, strangers are refused; and the
//! certificate files `pki::init` writes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use testkit::TempDir;
use tls::pki::{self, Ca, Validity};
use tls::{Conn, Credentials, TlsError};

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn cluster(dir: &Path, hosts: &[&str]) -> Vec<Credentials> {
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    pki::init(dir, &hosts)
        .unwrap()
        .iter()
        .map(|d| Credentials::load(d).unwrap())
        .collect()
}

/// Accepts one connection with `server`; the server's result and the
/// connected client socket.
fn serve(server: Credentials) -> (thread::JoinHandle<std::io::Result<Conn>>, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        server.accept(s, soon())
    });
    (t, TcpStream::connect(addr).unwrap())
}

#[test]
fn members_exchange_data_both_ways_at_once() {
    let d = TempDir::new("tls-members");
    let creds = cluster(d.path(), &["a", "b"]);
    let (server, tcp) = serve(creds[1].clone());
    let client = creds[0].connect(tcp, soon()).unwrap();
    let server = server.join().unwrap().unwrap();
    assert!(client.is_tls() && server.is_tls());
    let data: Vec<u8> = (0..3 << 20)
        .map(|i: u32| (i * 7 + i / 4096) as u8)
        .collect();
    // Each side writes on one thread while reading on another.
    let echo = |conn: Conn, data: Vec<u8>| {
        let w = conn.try_clone().unwrap();
        let writer = thread::spawn(move || {
            (&w).write_all(&data).unwrap();
            (&w).flush().unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        (&conn).read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        got
    };
    let d2 = data.clone();
    let s = thread::spawn(move || echo(server, d2));
    let got_by_client = echo(client, data.clone());
    let got_by_server = s.join().unwrap();
    assert!(got_by_client == data && got_by_server == data);
}

fn refused(
    server: Credentials,
    client: impl FnOnce(TcpStream) -> std::io::Result<()>,
) -> (String, String) {
    let (server, tcp) = serve(server);
    let c = client(tcp).err().map(|e| e.to_string()).unwrap_or_default();
    let s = server.join().unwrap().expect_err("refused").to_string();
    (s, c)
}

/// Connects, then reads: a client learns the server refused its
/// certificate only at its first read (TLS 1.3).
fn try_member(creds: &Credentials) -> impl FnOnce(TcpStream) -> std::io::Result<()> + '_ {
    move |tcp| {
        let c = creds.connect(tcp, soon())?;
        let mut b = [0u8; 1];
        (&c).read(&mut b).map(|_| ())?;
        Err(std::io::Error::other("read returned"))
    }
}

#[test]
fn a_client_expecting_one_host_refuses_another_member() {
    let d = TempDir::new("tls-names-bound");
    let creds = cluster(d.path(), &["a", "b", "c"]);
    // Expecting b, and b answers.
    let (server, tcp) = serve(creds[1].clone());
    let client = creds[0].expecting("b").unwrap().connect(tcp, soon());
    assert!(client.is_ok() && server.join().unwrap().is_ok());
    // Expecting b, and c answers: a member, but not the one named.
    let (s, c) = refused(
        creds[2].clone(),
        try_member(&creds[0].expecting("b").unwrap()),
    );
    assert!(c.contains("not for the host expected"), "{c}");
    assert!(s.contains("the peer refused the TLS session"), "{s}");
    // Names no certificate can carry are refused before any connection.
    for bad in ["", "10.0.0.1", "member.ferry.invalid", "a b"] {
        let e = creds[0].expecting(bad).unwrap_err();
        assert!(matches!(e, TlsError::HostName(_)), "{bad}: {e}");
    }
}

#[test]
fn a_certificate_from_another_ca_is_refused_both_ways() {
    let d = TempDir::new("tls-other-ca");
    let ours = cluster(&d.join("ours"), &["a"]);
    let theirs = cluster(&d.join("theirs"), &["x"]);
    // TLS 1.3: the client checks the server first, and refuses it.
    for (server, client) in [(&ours[0], &theirs[0]), (&theirs[0], &ours[0])] {
        let (s, c) = refused(server.clone(), try_member(client));
        assert!(c.contains("not valid for this cluster"), "{c}");
        assert!(s.contains("the peer refused the TLS session"), "{s}");
    }
    // A stranger that trusts any server but shows a certificate of
    // another CA is refused by the server.
    let (s, _) = refused(ours[0].clone(), stranger(Some(&d.join("theirs/x"))));
    assert!(s.contains("not valid for this cluster"), "{s}");
}

#[test]
fn an_expired_certificate_is_refused() {
    let d = TempDir::new("tls-expired");
    let ca = Ca::new("test CA", Validity::days(10)).unwrap();
    let past = Validity {
        not_before: time::OffsetDateTime::now_utc() - time::Duration::days(20),
        not_after: time::OffsetDateTime::now_utc() - time::Duration::days(1),
    };
    ca.write_host(&d.join("good"), "good", Validity::days(10))
        .unwrap();
    ca.write_host(&d.join("old"), "old", past).unwrap();
    let good = Credentials::load(&d.join("good")).unwrap();
    let old = Credentials::load(&d.join("old")).unwrap();
    let (s, _) = refused(good, try_member(&old));
    assert!(s.contains("Expired"), "{s}");
}

/// Trusts any server: a client that only lacks a certificate of its own.
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client that trusts any server and shows the certificate in
/// `dir`, or none.
fn stranger(dir: Option<&Path>) -> impl FnOnce(TcpStream) -> std::io::Result<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer));
    let config = match dir {
        None => config.with_no_client_auth(),
        Some(d) => {
            use rustls::pki_types::PrivateKeyDer;
            use rustls::pki_types::pem::PemObject;
            let chain = CertificateDer::pem_file_iter(d.join(pki::CERT))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(d.join(pki::KEY)).unwrap();
            config.with_client_auth_cert(chain, key).unwrap()
        }
    };
    move |tcp| {
        let name = ServerName::try_from("a").unwrap();
        let c = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut tls = rustls::StreamOwned::new(c, tcp);
        tls.write_all(b"hello")?;
        let mut b = [0u8; 1];
        tls.read(&mut b).map(|_| ())
    }
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let d = TempDir::new("tls-anonymous");
    let creds = cluster(d.path(), &["a"]);
    let (s, _) = refused(creds[0].clone(), stranger(None));
    assert!(s.contains("presented no certificate"), "{s}");
    // Nor does a peer that does not speak TLS get anywhere.
    let (s, _) = refused(creds[0].clone(), |mut tcp| {
        tcp.write_all(b"FERRYMIG plain hello\n")
    });
    assert!(s.contains("TLS"), "{s}");
}

#[test]
fn init_writes_private_keys_and_never_overwrites() {
    let d = TempDir::new("tls-init");
    let dir = d.join("pki");
    let hosts = vec!["a".to_string(), "host-2".to_string()];
    let made = pki::init(&dir, &hosts).unwrap();
    assert_eq!(made, vec![dir.join("a"), dir.join("host-2")]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join(pki::CA_KEY)), 0o600);
    assert_eq!(mode(&dir.join("a").join(pki::KEY)), 0o600);
    assert_eq!(mode(&dir.join("a")), 0o700);
    let ca_before = std::fs::read(dir.join(pki::CA_CERT)).unwrap();
    match pki::init(&dir, &["c".to_string()]) {
        Err(TlsError::Exists { path }) => assert_eq!(path, dir.join(pki::CA_CERT)),
        other => panic!("{:?}", other.err()),
    }
    assert_eq!(std::fs::read(dir.join(pki::CA_CERT)).unwrap(), ca_before);
    assert!(!dir.join("c").exists());
}

#[test]
fn init_refuses_bad_host_names_before_writing() {
    let d = TempDir::new("tls-names");
    for (hosts, says) in [
        (vec!["A"], "lowercase"),
        (vec!["ok", "a/b"], "lowercase"),
        (vec!["-a"], "starts or ends"),
        (vec![""], "empty"),
        (vec!["a", "a"], "twice"),
        (vec![], "no host"),
    ] {
        let hosts: Vec<String> = hosts.into_iter().map(String::from).collect();
        let e = pki::init(&d.join("p"), &hosts)
            .expect_err("refused")
            .to_string();
        assert!(e.contains(says), "{hosts:?}: {e}");
        assert!(!e.contains('\n'));
        assert!(!d.join("p").exists());
    }
    let long = "x".repeat(64);
    assert!(pki::init(&d.join("p"), &[long]).is_err());
}

#[test]
fn loading_reports_the_missing_file() {
    let d = TempDir::new("tls-load");
    let e = Credentials::load(d.path())
        .expect_err("no files")
        .to_string();
    assert!(e.contains("ca.pem"), "{e}");
    cluster(&d.join("c"), &["a"]);
    std::fs::write(d.join("c/a/key.pem"), "not a key").unwrap();
    let e = Credentials::load(&d.join("c/a"))
        .expect_err("bad key")
        .to_string();
    assert!(e.contains("key.pem") && e.contains("private key"), "{e}");
}
