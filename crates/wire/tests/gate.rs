//! The gate on loopback: hostile and mistaken peers never keep an
//! authenticated source out, and a flood is bounded.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use testkit::{connect_from, random_bytes, wait_for};
use wire::gate::{DestHandshake, Gate, GateLimits};
use wire::*;

const PATIENCE: Duration = Duration::from_secs(20);

fn secret(s: &str) -> Secret {
    Secret::from_bytes(s.as_bytes()).unwrap()
}

fn good() -> Secret {
    secret("the right secret, 32 bytes long!")
}

fn gate(limits: GateLimits) -> Gate<Session> {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let h = DestHandshake {
        secret: good(),
        offer: Offer::default(),
    };
    Gate::open(l, h, limits, None).unwrap()
}

/// A source's handshake over a new connection to `addr`.
fn authenticate(addr: SocketAddr, secret: &Secret) -> Result<TcpStream, WireError> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut r = MessageReader::new(&s);
    let mut w = MessageWriter::new(&s);
    source_handshake(&mut r, &mut w, secret, &Offer::default())?;
    Ok(s)
}

fn hello() -> Vec<u8> {
    let mut w = MessageWriter::new(Vec::new());
    w.hello(&Hello {
        min_version: MIN_PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        capabilities: Capabilities::NONE,
        nonce: [1; NONCE_LEN],
    })
    .unwrap();
    w.get_ref().clone()
}

/// Whether the gate has closed `s` (end of stream or reset), reading and
/// dropping whatever it sent first.
fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
}

#[test]
fn hostile_peers_do_not_keep_the_source_out() {
    let g = gate(GateLimits {
        deadline: Duration::from_millis(600),
        ..GateLimits::default()
    });
    let addr = g.local_addr();
    // Garbage, an idle connection, and a Hello trickled too slowly.
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.write_all(&random_bytes(8)).unwrap();
    let mut idle = TcpStream::connect(addr).unwrap();
    let mut slow = TcpStream::connect(addr).unwrap();
    let mut trickle = slow.try_clone().unwrap();
    let trickler = thread::spawn(move || {
        for b in hello() {
            if trickle.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    // A source with the wrong secret is refused (it refuses us first).
    let e = authenticate(addr, &secret("not the secret 0123456789")).unwrap_err();
    assert!(matches!(e, WireError::AuthFailed(_)), "{e}");
    // The source gets in while all of them are there.
    let src = thread::spawn(move || authenticate(addr, &good()));
    let admitted = g.next(Some(PATIENCE)).expect("the source is admitted");
    assert_eq!(admitted.auth.version, PROTOCOL_VERSION);
    src.join().unwrap().unwrap();
    // Each hostile peer is closed: at once, or at the deadline.
    for s in [&mut garbage, &mut idle, &mut slow] {
        assert!(closed(s));
    }
    trickler.join().unwrap();
    wait_for("four refusals", PATIENCE, || {
        (g.stats().refused == 4).then_some(())
    });
    let st = g.stats();
    assert_eq!((st.admitted, st.pending), (1, 0), "{st:?}");
    assert!(g.next(Some(Duration::from_millis(50))).is_none());
}

#[test]
fn a_flood_from_one_host_is_closed_at_once_and_others_get_in() {
    let g = gate(GateLimits {
        deadline: Duration::from_secs(60),
        max_pending: 8,
        max_pending_per_host: 4,
        ..GateLimits::default()
    });
    let addr = g.local_addr();
    let flooder: IpAddr = [127, 0, 0, 2].into();
    let mut flood: Vec<TcpStream> = (0..40)
        .map(|_| connect_from(flooder, addr).unwrap())
        .collect();
    wait_for("36 refused at once", PATIENCE, || {
        (g.stats().refused == 36).then_some(())
    });
    assert_eq!(g.stats().pending, 4);
    // Another host still authenticates (the flood holds its 4 slots).
    let src = thread::spawn(move || authenticate(addr, &good()));
    let a = g.next(Some(PATIENCE)).expect("the source is admitted");
    assert_eq!(a.peer.ip(), IpAddr::from([127, 0, 0, 1]));
    src.join().unwrap().unwrap();
    assert_eq!(g.stats().pending, 4);
    // Closing the gate cuts what still authenticates, and the port.
    drop(g);
    for s in &mut flood {
        assert!(closed(s));
    }
    assert!(TcpStream::connect(addr).is_err(), "the port still listens");
    let _: SocketAddr = a.stream.peer_addr().unwrap();
}

#[test]
fn a_connection_that_authenticated_is_its_own() {
    let g = gate(GateLimits::default());
    let addr = g.local_addr();
    let (a, b) = (
        thread::spawn(move || authenticate(addr, &good())),
        thread::spawn(move || authenticate(addr, &good())),
    );
    let first = g.next(Some(PATIENCE)).unwrap();
    let second = g.next(Some(PATIENCE)).unwrap();
    let _a = a.join().unwrap().unwrap();
    let _b = b.join().unwrap().unwrap();
    assert_ne!(first.peer, second.peer);
    // A peer sending garbage now disturbs neither.
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.write_all(&random_bytes(4096)).unwrap();
    assert!(closed(&mut garbage));
    for mut s in [first.stream, second.stream] {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let e = s.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
    }
}
