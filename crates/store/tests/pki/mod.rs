//! A test CA, etcd's server certificate and client certificates, written
//! as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use store::TlsFiles;

pub struct Pki {
    /// etcd's side: its certificate and the CA it trusts for clients.
    pub server: testkit::EtcdTls,
    /// A client signed by the CA.
    pub client: TlsFiles,
    /// A client signed by another CA.
    pub rogue: TlsFiles,
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

/// Writes NAME.pem and NAME-key.pem for a certificate signed by `ca`.
fn leaf(dir: &Path, name: &str, ca: &Ca, sans: &[&str], server: bool) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = if server {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

pub fn make(dir: &Path) -> Pki {
    let good = ca("ferry test CA");
    let other = ca("some other CA");
    let ca_path = dir.join("ca.pem");
    let other_path = dir.join("other-ca.pem");
    std::fs::write(&ca_path, &good.pem).unwrap();
    std::fs::write(&other_path, &other.pem).unwrap();
    let (cert, key) = leaf(dir, "etcd", &good, &["127.0.0.1", "localhost"], true);
    let (ccert, ckey) = leaf(dir, "manager", &good, &[], false);
    let (rcert, rkey) = leaf(dir, "intruder", &other, &[], false);
    Pki {
        server: testkit::EtcdTls {
            ca: ca_path.clone(),
            cert,
            key,
        },
        client: TlsFiles {
            ca: ca_path.clone(),
            cert: ccert,
            key: ckey,
        },
        rogue: TlsFiles {
            ca: ca_path,
            cert: rcert,
            key: rkey,
        },
    }
}
