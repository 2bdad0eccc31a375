//! The behaviour suite against a real etcd (Debian's etcd-server), one
//! member per test on free loopback ports; then what only etcd has:
//! mutual TLS, and a server that hangs rather than dies.

mod pki;
#[macro_use]
mod suite;

use std::process::Command;
use std::time::Duration;

use store::{EtcdConfig, Store, StoreConfig, StoreError};
use suite::{DEADLINE, Harness, LIMIT, bounded};
use testkit::{Etcd, TempDir, wait_for};

struct EtcdHarness {
    etcd: Etcd,
}

impl EtcdHarness {
    fn new() -> EtcdHarness {
        EtcdHarness {
            etcd: Etcd::start("store"),
        }
    }
}

impl Harness for EtcdHarness {
    fn store(&self, deadline: Duration) -> Store {
        let config = EtcdConfig::new(vec![self.etcd.endpoint()]).with_deadline(deadline);
        Store::connect(&StoreConfig::Etcd(config)).unwrap()
    }

    fn config(&self) -> StoreConfig {
        StoreConfig::Etcd(EtcdConfig::new(vec![self.etcd.endpoint()]))
    }

    fn kill(&mut self) {
        self.etcd.kill();
    }

    fn restart(&mut self) {
        self.etcd.restart();
    }

    fn keeps_data(&self) -> bool {
        true
    }
}

behaviour_suite!(EtcdHarness::new());

#[test]
fn mutual_tls_admits_only_certified_clients() {
    let dir = TempDir::new("store-pki");
    let pki = pki::make(&dir);
    let etcd = Etcd::start_tls("store-tls", pki.server.clone());
    let config = |tls| {
        StoreConfig::Etcd(
            EtcdConfig::new(vec![etcd.endpoint()])
                .with_tls(tls)
                .with_deadline(Duration::from_secs(3)),
        )
    };

    let s = Store::connect(&config(pki.client.clone())).unwrap();
    let r = s.put("/tls/k", b"v", None).unwrap();
    assert_eq!(s.get("/tls/k").unwrap().unwrap().mod_revision, r);
    let mut w = s.watch("/tls/", None).unwrap();
    s.put("/tls/k", b"w", None).unwrap();
    assert!(w.next(DEADLINE).unwrap().is_some());

    // A certificate from another CA, or none at all: refused, promptly.
    let rogue = config(pki.rogue.clone());
    let err = bounded("a rogue client's call", move || {
        match Store::connect(&rogue) {
            Ok(s) => s.get("/tls/k").unwrap_err(),
            Err(e) => e,
        }
    });
    assert!(err.is_unavailable(), "{err}");
    eprintln!("a rogue client is told: {err}");
    let plain = StoreConfig::Etcd(
        EtcdConfig::new(vec![etcd.endpoint()]).with_deadline(Duration::from_secs(3)),
    );
    let err = bounded("a plain client's call", move || {
        Store::connect(&plain).unwrap().get("/tls/k").unwrap_err()
    });
    assert!(err.is_unavailable(), "{err}");

    let mut missing = pki.client.clone();
    missing.key = dir.join("no-such-key.pem");
    assert!(matches!(
        Store::connect(&config(missing)),
        Err(StoreError::TlsFile { .. })
    ));
}

#[test]
fn calls_to_a_hung_etcd_time_out() {
    let etcd = Etcd::start("store-hung");
    let config = EtcdConfig::new(vec![etcd.endpoint()]).with_deadline(Duration::from_secs(1));
    let s = Store::connect(&StoreConfig::Etcd(config)).unwrap();
    s.put("/h/k", b"v", None).unwrap();
    let pid = etcd.pid().unwrap().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    let s2 = s.clone();
    let err = bounded("a call to a stopped etcd", move || {
        s2.get("/h/k").unwrap_err()
    });
    signal("-CONT");
    assert!(matches!(err, StoreError::Timeout { .. }), "{err}");
    wait_for("etcd to answer again", LIMIT, || {
        s.get("/h/k").ok().flatten()
    });
}

#[test]
fn plain_text_to_a_remote_etcd_is_refused() {
    let config = EtcdConfig::new(vec!["192.0.2.1:2379".into()]);
    let err = Store::connect(&StoreConfig::Etcd(config)).err().unwrap();
    assert!(err.to_string().contains("mutual TLS is required"), "{err}");
}
