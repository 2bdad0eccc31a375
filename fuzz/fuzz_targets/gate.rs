//! Fuzzes the pre-authentication path as a server: one `wire::gate::Gate`
//! on loopback (short deadline, few slots) serves several concurrent
//! connections whose behaviour the input chooses: raw bytes, a valid Hello
//! followed by raw bytes (to reach the proof check), a source with a wrong
//! secret, a source with the right one; each then closes its side, or the
//! whole connection at once. Invariants: no panic; a peer reads nothing but
//! Welcome, VersionRefused and the one generic refusal; only sources that
//! hold the secret are admitted; afterwards nothing is left authenticating
//! and a source with the secret still gets in.

#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wire::gate::{DestHandshake, Gate, GateLimits};
use wire::{
    AbortCode, Capabilities, Hello, Message, MessageReader, MessageWriter, NONCE_LEN, Offer,
    REFUSAL, Secret, Session, source_handshake,
};

const SECRET: &[u8] = b"the gate's secret for fuzzing it";
const PEERS: usize = 8;
const WAIT: Duration = Duration::from_secs(5);

fn gate() -> &'static Gate<Session> {
    static GATE: OnceLock<Gate<Session>> = OnceLock::new();
    GATE.get_or_init(|| {
        let l = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let h = DestHandshake {
            secret: Secret::from_bytes(SECRET).unwrap(),
            offer: Offer::default(),
        };
        let limits = GateLimits {
            deadline: Duration::from_millis(300),
            max_pending: 4,
            max_pending_per_host: 4,
            ..GateLimits::default()
        };
        // No TLS: the fuzzer speaks the secret handshake in the clear.
        Gate::open(l, h, limits, None).expect("the gate opens")
    })
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
}

/// What one connection does.
enum Peer {
    /// Bytes, then close the write side (true) or everything at once.
    Raw(Vec<u8>, bool),
    /// A valid Hello for these versions, then bytes, then close the write side.
    HelloThen(u16, u16, Vec<u8>),
    /// A source's handshake with this secret.
    Source(Secret),
}

fn hello(min_version: u16, max_version: u16) -> Vec<u8> {
    let mut w = MessageWriter::new(Vec::new());
    w.hello(&Hello {
        min_version,
        max_version,
        capabilities: Capabilities(0),
        nonce: [5; NONCE_LEN],
    })
    .unwrap();
    w.get_ref().clone()
}

/// Everything the gate wrote back is allowed before authentication.
fn check_answer(bytes: &[u8]) {
    let mut r = MessageReader::new(bytes);
    while let Ok(m) = r.next("") {
        match m {
            Message::Welcome(_) | Message::VersionRefused { .. } => {}
            Message::Abort(a) => {
                assert_eq!(a.code, AbortCode::AuthFailed);
                assert_eq!(a.message, REFUSAL, "a refusal that says more");
            }
            m => panic!("{} sent to an unauthenticated peer", m.name()),
        }
    }
}

fn raw(addr: SocketAddr, bytes: &[u8], half_close: bool) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    let _ = s.write_all(bytes);
    if !half_close {
        return;
    }
    let _ = s.shutdown(Shutdown::Write);
    let _ = s.set_read_timeout(Some(WAIT));
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    check_answer(&back);
}

/// Runs a source's handshake; true when it was admitted.
fn source(addr: SocketAddr, secret: &Secret) -> bool {
    let Ok(s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(WAIT));
    let _ = s.set_nodelay(true);
    let mut r = MessageReader::new(&s);
    let mut w = MessageWriter::new(&s);
    source_handshake(&mut r, &mut w, secret, &Offer::default()).is_ok()
}

fn run(addr: SocketAddr, peer: Peer) -> bool {
    match peer {
        Peer::Raw(bytes, half_close) => raw(addr, &bytes, half_close),
        Peer::HelloThen(min, max, rest) => raw(addr, &[hello(min, max), rest].concat(), true),
        Peer::Source(secret) => return source(addr, &secret),
    }
    false
}

fn peers(inp: &mut Input<'_>) -> Vec<Peer> {
    let mut out = Vec::new();
    while out.len() < PEERS {
        let Some(op) = inp.byte() else { break };
        let len = usize::from(inp.byte().unwrap_or(0)) * 4;
        out.push(match op % 5 {
            0 | 1 => Peer::Raw(inp.bytes(len), op % 5 == 0),
            2 => {
                let v = u16::from(op >> 4);
                Peer::HelloThen(v, v + u16::from(op >> 7), inp.bytes(len))
            }
            3 => Peer::Source(Secret::from_bytes(b"a secret that is not the gate's").unwrap()),
            _ => Peer::Source(Secret::from_bytes(SECRET).unwrap()),
        });
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let gate = gate();
    let addr = gate.local_addr();
    assert!(
        gate.next(Some(Duration::ZERO)).is_none(),
        "admitted a peer that did not authenticate"
    );
    let threads: Vec<_> = peers(&mut Input(data))
        .into_iter()
        .map(|p| thread::spawn(move || run(addr, p)))
        .collect();
    let authenticated = threads
        .into_iter()
        .map(|t| t.join().expect("a peer thread"))
        .filter(|&ok| ok)
        .count();
    // Exactly the sources that authenticated come out of the gate.
    for _ in 0..authenticated {
        assert!(
            gate.next(Some(WAIT)).is_some(),
            "an authenticated source was lost"
        );
    }
    // Nothing is left authenticating, and the next source gets in.
    let end = Instant::now() + WAIT;
    while gate.stats().pending > 0 {
        assert!(Instant::now() < end, "connections left authenticating");
        thread::sleep(Duration::from_millis(5));
    }
    assert!(source(addr, &Secret::from_bytes(SECRET).unwrap()));
    assert!(gate.next(Some(WAIT)).is_some());
});
