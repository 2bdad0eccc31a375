//! Row 8b and "Hostile peers" of docs/SAFETY.md: `ferry receive` outlasts
//! peers that are not its source. One VM travels through a chain of
//! destinations; at each, hostile or mistaken peers come first (garbage,
//! idle connections, a wrong secret, a flood, a slow handshake), then the
//! real migration, which must complete with the guest verifying on the
//! destination.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use crate::harness::*;

/// Default `wire::gate` limits, as `ferry receive` uses them.
const LOG_BURST: usize = 10;
const MAX_PENDING_PER_HOST: usize = 8;

/// Connections a scenario holds open through the migration: the receiver
/// must close them once its source has authenticated.
struct Held {
    conns: Vec<TcpStream>,
}

/// A hostile scenario: what happens at the destination before the real
/// migration, and what must hold after it.
struct Hostile {
    name: &'static str,
    before: fn(&mut Dest) -> Held,
    after: fn(&Dest),
}

fn connect(dest: &Dest) -> TcpStream {
    TcpStream::connect(&dest.addr).expect("ferry receive accepts connections")
}

fn hello(min_version: u16, max_version: u16) -> Vec<u8> {
    let mut w = wire::MessageWriter::new(Vec::new());
    w.hello(&wire::Hello {
        min_version,
        max_version,
        capabilities: wire::Capabilities::NONE,
        nonce: [7; wire::NONCE_LEN],
    })
    .unwrap();
    w.get_ref().clone()
}

/// Sends `bytes`, closes its side, and returns what the receiver answered
/// until it closed (a reset ends the answer too).
fn send_and_read(dest: &Dest, bytes: &[u8]) -> Vec<u8> {
    let mut s = connect(dest);
    // The receiver may close (reset) before it has read everything.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    read_until_closed(&mut s)
}

fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert_ne!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock,
                    "the receiver never closed the connection"
                );
                return out;
            }
        }
    }
}

/// The names of the messages in `bytes`.
fn messages(bytes: &[u8]) -> Vec<String> {
    let mut r = wire::MessageReader::new(bytes);
    let mut out = Vec::new();
    while let Ok(m) = r.next("") {
        out.push(match m {
            wire::Message::Abort(a) => format!("Abort: {}", a.message),
            m => m.name().to_string(),
        });
    }
    out
}

/// Random bytes, an HTTP request, a truncated Hello and a Hello of unknown
/// versions: each refused and logged; only the last is answered
/// (VersionRefused), the others get at most the generic refusal.
fn garbage(dest: &mut Dest) -> Held {
    let generic = format!("Abort: {}", wire::REFUSAL);
    // Random bytes, whose first byte is no message kind.
    let mut noise = random_bytes(4096);
    noise[0] = 0x99;
    for (bytes, words) in [
        (noise, &["unknown kind 0x99"][..]),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), &["0x47"][..]),
        (hello(1, 1)[..30].to_vec(), &["ended inside frame"][..]),
        (hello(90, 99), &["version mismatch", "90..=99"][..]),
    ] {
        let answer = messages(&send_and_read(dest, &bytes));
        let line = dest.wait_refusal(words);
        assert!(line.contains("127.0.0.1:"), "no peer address: {line}");
        if words[0] == "version mismatch" {
            assert_eq!(answer, ["VersionRefused"]);
        } else {
            assert!(
                answer.is_empty() || answer == [generic.clone()],
                "{answer:?}"
            );
        }
    }
    Held { conns: Vec::new() }
}

/// A connection that sends nothing and one that closes at once (a health
/// check), held open through the migration.
fn idle(dest: &mut Dest) -> Held {
    drop(connect(dest));
    dest.wait_refusal(&["closed the connection"]);
    Held {
        conns: vec![connect(dest), connect(dest)],
    }
}

/// A source with the wrong secret, and a peer that answers Welcome with a
/// made-up proof.
fn wrong_secret(dest: &mut Dest) -> Held {
    let s = connect(dest);
    let wrong = wire::Secret::from_bytes(b"not the secret of this receiver!").unwrap();
    let mut r = wire::MessageReader::new(&s);
    let mut w = wire::MessageWriter::new(&s);
    let e = wire::source_handshake(&mut r, &mut w, &wrong, &wire::Offer::default()).unwrap_err();
    assert!(matches!(e, wire::WireError::AuthFailed(_)), "{e}");
    dest.wait_refusal(&["authentication failed"]);
    let mut forged = hello(1, 1);
    let mut w = wire::MessageWriter::new(&mut forged);
    w.auth_proof(&[9; wire::NONCE_LEN]).unwrap();
    let answer = messages(&send_and_read(dest, &forged));
    assert_eq!(
        answer,
        ["Welcome".to_string(), format!("Abort: {}", wire::REFUSAL)]
    );
    wait_for("two refused proofs", PATIENCE, || {
        (dest.refusals().len() == 2).then_some(())
    });
    Held { conns: Vec::new() }
}

/// 200 connections from another host (127.0.0.2), held open through the
/// migration: the host gets its few handshake slots, the rest are closed
/// at once, and the log stays short.
fn flood(dest: &mut Dest) -> Held {
    let from: IpAddr = [127, 0, 0, 2].into();
    let addr = dest.socket_addr();
    let mut conns: Vec<TcpStream> = (0..200)
        .map(|_| connect_from(from, addr).expect("connect from 127.0.0.2"))
        .collect();
    // Those beyond the host's slots are closed at once, not at a deadline.
    let extra = conns.split_off(MAX_PENDING_PER_HOST);
    for mut s in extra {
        read_until_closed(&mut s);
    }
    dest.wait_refusal(&["127.0.0.2:", "from this host are already authenticating"]);
    Held { conns }
}

fn flood_logged_briefly(dest: &Dest) {
    // The summary comes when the gate closes: once the source's time to
    // come back for Owned (the receiver's recovery timeout) is over.
    let summary = wait_for("a summary of the refusals", PATIENCE, || {
        let text = dest.proc.stderr_text();
        text.lines()
            .find(|l| l.contains(REFUSED_MORE))
            .map(str::to_string)
    });
    let text = dest.proc.stderr_text();
    let lines = dest.refusals().len();
    assert!(lines <= LOG_BURST, "{lines} refusal lines:\n{text}");
    eprintln!("[flood] {summary}");
}

/// A Hello sent one byte every 200 ms: a slow handshake is cut at its
/// deadline (5 s), however steadily its bytes come.
fn slow(dest: &mut Dest) -> Held {
    let mut s = connect(dest);
    let mut reader = s.try_clone().unwrap();
    let trickle = thread::spawn(move || {
        for b in hello(1, 1) {
            if s.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    dest.wait_refusal(&["did not authenticate in time"]);
    read_until_closed(&mut reader);
    trickle.join().unwrap();
    Held { conns: Vec::new() }
}

fn nothing_more(_: &Dest) {}

#[test]
fn receive_outlasts_hostile_peers_and_the_migration_then_succeeds() {
    let _g = serial();
    let dir = TempDir::new("hostile");
    let secret = dir.secret("secret");
    let scenarios = [
        Hostile {
            name: "garbage",
            before: garbage,
            after: nothing_more,
        },
        Hostile {
            name: "idle",
            before: idle,
            after: nothing_more,
        },
        Hostile {
            name: "wrong-secret",
            before: wrong_secret,
            after: nothing_more,
        },
        Hostile {
            name: "flood",
            before: flood,
            after: flood_logged_briefly,
        },
        Hostile {
            name: "slow",
            before: slow,
            after: nothing_more,
        },
    ];
    let mut vm = Vm::boot(dir.path(), "src");
    for h in scenarios {
        let mut dest = Dest::start(
            dir.path(),
            &format!("{}-dst", h.name),
            &secret,
            &["--recovery-timeout", "2s"],
        );
        let mut held = (h.before)(&mut dest);
        let mut m = vm.start_migrate(
            dir.path(),
            &format!("{}-migrate", h.name),
            &dest.addr,
            &secret,
            &["--strategy", "downtime"],
        );
        let st = m.wait(PATIENCE * 2);
        assert!(
            st.success(),
            "{}: the migration failed: {}\ndestination: {}",
            h.name,
            m.stderr_text(),
            dest.proc.stderr_text()
        );
        assert_completed_on(&mut vm, &mut dest, &m);
        // Once its source authenticated, the receiver closed whatever
        // still tried to.
        for s in &mut held.conns {
            read_until_closed(s);
        }
        (h.after)(&dest);
        assert_no_panic(&dest.proc.name, &dest.proc.stderr_text());
        vm = dest.into_vm();
    }
}
