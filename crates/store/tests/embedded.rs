//! The behaviour suite against the embedded store, then what only it has:
//! its socket, and a peer that does not speak its protocol.

#[macro_use]
mod suite;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use store::{EmbeddedServer, Store, StoreConfig, StoreError};
use suite::{DEADLINE, Harness};
use testkit::TempDir;

/// Fields drop in order: the server before its directory.
struct Embedded {
    server: Option<EmbeddedServer>,
    socket: PathBuf,
    _dir: TempDir,
}

impl Embedded {
    fn new() -> Embedded {
        let dir = TempDir::new("store-embedded");
        let socket = dir.join("store.sock");
        let server = EmbeddedServer::start(&socket).unwrap();
        Embedded {
            _dir: dir,
            socket,
            server: Some(server),
        }
    }
}

impl Harness for Embedded {
    fn store(&self, deadline: Duration) -> Store {
        let config = StoreConfig::Embedded {
            socket: self.socket.clone(),
            deadline,
        };
        Store::connect(&config).unwrap()
    }

    fn config(&self) -> StoreConfig {
        StoreConfig::Embedded {
            socket: self.socket.clone(),
            deadline: DEADLINE,
        }
    }

    fn kill(&mut self) {
        self.server = None;
    }

    fn restart(&mut self) {
        self.server = Some(EmbeddedServer::start(&self.socket).unwrap());
    }

    fn keeps_data(&self) -> bool {
        false
    }
}

behaviour_suite!(Embedded::new());

#[test]
fn the_socket_is_private_and_served_once() {
    let e = Embedded::new();
    let mode = std::fs::metadata(&e.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let second = EmbeddedServer::start(&e.socket);
    assert!(matches!(second, Err(StoreError::InvalidConfig(m)) if m.contains("already serves")));
    let not_a_socket = e._dir.join("file");
    std::fs::write(&not_a_socket, b"x").unwrap();
    assert!(EmbeddedServer::start(&not_a_socket).is_err());
    // A socket left by a dead server is replaced.
    let stale = e._dir.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let server = EmbeddedServer::start(&stale).unwrap();
    server.store().unwrap().put("/k", b"v", None).unwrap();
    drop(server);
    assert!(!stale.exists(), "the socket goes with its server");
}

#[test]
fn garbage_gets_one_error_and_the_server_goes_on() {
    let e = Embedded::new();
    for garbage in [
        b"\x00\x00\x00\x05hello".to_vec(),
        b"\xff\xff\xff\xffxxxx".to_vec(),
        b"\x00\x00\x00\x02{}".to_vec(),
    ] {
        let mut raw = UnixStream::connect(&e.socket).unwrap();
        raw.set_read_timeout(Some(DEADLINE)).unwrap();
        raw.write_all(&garbage).unwrap();
        let mut answer = Vec::new();
        raw.read_to_end(&mut answer).unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.contains("Protocol"), "{garbage:?} -> {text}");
    }
    let s = e.store(DEADLINE);
    s.put("/still", b"serving", None).unwrap();
    assert!(s.get("/still").unwrap().is_some());
}

#[test]
fn no_server_is_an_error_at_the_first_call() {
    let dir = TempDir::new("store-none");
    let config = StoreConfig::Embedded {
        socket: dir.join("nobody.sock"),
        deadline: DEADLINE,
    };
    let s = Store::connect(&config).unwrap();
    let err = s.get("/k").unwrap_err();
    assert!(err.is_unavailable(), "{err}");
}
