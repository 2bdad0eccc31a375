//! Message round trips, corruption, and the handshake between two threads.

use std::os::unix::net::UnixStream;
use std::thread;

use vmstate::VmConfig;
use wire::*;

fn config() -> VmConfig {
    VmConfig {
        memory_bytes: 1 << 20,
        vcpus: 2,
        regions: vec![(0, 1 << 20)],
        cmdline: "rate=1000".into(),
        kernel: "dirtier".into(),
        tsc_khz: 2_300_000,
    }
}

fn secret(s: &str) -> Secret {
    Secret::from_bytes(s.as_bytes()).unwrap()
}

#[test]
fn every_message_round_trips() {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf);
    let hello = Hello {
        min_version: 1,
        max_version: 3,
        capabilities: Capabilities::POSTCOPY,
        nonce: [7; 32],
    };
    w.hello(&hello).unwrap();
    let welcome = Welcome {
        version: 1,
        capabilities: Capabilities::NONE,
        nonce: [8; 32],
        proof: [9; 32],
    };
    w.welcome(&welcome).unwrap();
    w.version_refused(2, 4).unwrap();
    w.auth_proof(&[1; 32]).unwrap();
    w.auth_ok().unwrap();
    let start = Start {
        migration_id: 0xdead_beef,
        page_size: 4096,
        flags: 0,
        config: config(),
    };
    w.start(&start).unwrap();
    w.accept(&Accept {
        flags: Accept::POSTCOPY,
    })
    .unwrap();
    let rb = RoundBegin {
        round: 3,
        flags: RoundBegin::FINAL,
        pages: 77,
    };
    w.round_begin(&rb).unwrap();
    let page: Vec<u8> = (0..8192).map(|i| i as u8).collect();
    w.pages(0x2000, &page).unwrap();
    w.zero_pages(&[(0x4000, 2), (0x10000, 1)]).unwrap();
    let re = RoundEnd {
        round: 3,
        pages: 2,
        zero_pages: 3,
    };
    w.round_end(&re).unwrap();
    w.ready().unwrap();
    w.commit(42).unwrap();
    let res = Resumed {
        commit_to_resume_ns: 5,
        resumed_unix_ns: 6,
    };
    w.resumed(&res).unwrap();
    w.abort(AbortCode::MemoryLimit, "too big").unwrap();
    w.postcopy_begin(&[0b1011, 1 << 63], 500_000_000).unwrap();
    let req = PageRequest {
        gpa: 0x10_0000,
        pages: 16,
    };
    w.page_request(&req).unwrap();
    let end = PostcopyEnd {
        pages: 3,
        zero_pages: 1,
    };
    w.postcopy_end(&end).unwrap();
    let done = PostcopyDone {
        pages: 4,
        faults: 2,
        fault_p50_ns: 100,
        fault_p99_ns: 900,
    };
    w.postcopy_done(&done).unwrap();
    w.lease_request(&LeaseRequest { seq: 7 }).unwrap();
    let grant = LeaseGrant { seq: 7, flags: 0 };
    w.lease_grant(&grant).unwrap();
    let last = LeaseGrant {
        seq: 0,
        flags: LeaseGrant::FINAL,
    };
    w.lease_grant(&last).unwrap();
    w.reattach(&Reattach { migration_id: 42 }).unwrap();
    w.reattached(&[0b110, 0]).unwrap();
    w.drain(&Drain { seq: 3 }).unwrap();
    w.drained(&Drain { seq: 3 }).unwrap();
    w.stale(&[0, 1 << 63, 0b1]).unwrap();
    w.owned(42).unwrap();
    let written = w.bytes_written();
    assert_eq!(written, buf.len() as u64);

    let mut r = MessageReader::new(&buf[..]);
    assert!(matches!(r.next("").unwrap(), Message::Hello(h) if h == hello));
    assert!(matches!(r.next("").unwrap(), Message::Welcome(x) if x == welcome));
    assert!(matches!(
        r.next("").unwrap(),
        Message::VersionRefused {
            min_version: 2,
            max_version: 4
        }
    ));
    assert!(matches!(r.next("").unwrap(), Message::AuthProof(p) if p == [1; 32]));
    assert!(matches!(r.next("").unwrap(), Message::AuthOk));
    assert!(matches!(r.next("").unwrap(), Message::Start(s) if *s == start));
    assert!(matches!(r.next("").unwrap(), Message::Accept(a) if a.postcopy()));
    assert!(matches!(r.next("").unwrap(), Message::RoundBegin(x) if x == rb && x.is_final()));
    assert!(
        matches!(r.next("").unwrap(), Message::Pages { gpa: 0x2000, data } if data == &page[..])
    );
    match r.next("").unwrap() {
        Message::ZeroPages(runs) => {
            assert_eq!(runs.collect::<Vec<_>>(), vec![(0x4000, 2), (0x10000, 1)]);
        }
        m => panic!("got {}", m.name()),
    }
    assert!(matches!(r.next("").unwrap(), Message::RoundEnd(x) if x == re));
    assert!(matches!(r.next("").unwrap(), Message::Ready));
    assert!(matches!(
        r.next("").unwrap(),
        Message::Commit { migration_id: 42 }
    ));
    assert!(matches!(r.next("").unwrap(), Message::Resumed(x) if x == res));
    assert!(
        matches!(r.next("").unwrap(), Message::Abort(a) if a.code == AbortCode::MemoryLimit && a.message == "too big")
    );
    match r.next("").unwrap() {
        Message::PostcopyBegin(b) => {
            assert_eq!(b.pages, 4);
            assert_eq!(b.lease_ns, 500_000_000);
            assert_eq!(b.bitmap.len(), 16);
            assert_eq!(b.bitmap[0], 0b1011);
            assert_eq!(b.bitmap[15], 0x80);
        }
        m => panic!("got {}", m.name()),
    }
    assert!(matches!(r.next("").unwrap(), Message::PageRequest(x) if x == req));
    assert!(matches!(r.next("").unwrap(), Message::PostcopyEnd(x) if x == end));
    assert!(matches!(r.next("").unwrap(), Message::PostcopyDone(x) if x == done));
    assert!(matches!(r.next("").unwrap(), Message::LeaseRequest(x) if x.seq == 7));
    assert!(matches!(r.next("").unwrap(), Message::LeaseGrant(x) if x == grant));
    assert!(matches!(r.next("").unwrap(), Message::LeaseGrant(x) if x == last && x.is_final()));
    assert!(matches!(r.next("").unwrap(), Message::Reattach(x) if x.migration_id == 42));
    assert!(
        matches!(r.next("").unwrap(), Message::Reattached(x) if x.pages == 2 && x.bitmap.len() == 16)
    );
    assert!(matches!(r.next("").unwrap(), Message::Drain(x) if x.seq == 3));
    assert!(matches!(r.next("").unwrap(), Message::Drained(x) if x.seq == 3));
    assert!(
        matches!(r.next("").unwrap(), Message::Stale(x) if x.pages == 2 && x.bitmap.len() == 24 && x.bitmap[15] == 0x80)
    );
    assert!(matches!(
        r.next("").unwrap(),
        Message::Owned { migration_id: 42 }
    ));
    let e = r.next("waiting for more").unwrap_err();
    assert!(matches!(e, WireError::Closed { .. }));
    assert!(e.to_string().contains("waiting for more"));
}

/// Post-copy messages that lie about themselves are refused at decoding.
#[test]
fn malformed_postcopy_messages_are_refused() {
    use vmstate::frame::FrameWriter;
    let decode = |kind: u8, payload: &[u8]| {
        let mut buf = Vec::new();
        FrameWriter::new(&mut buf)
            .write_frame(kind, 0, &[payload])
            .unwrap();
        let mut r = MessageReader::new(&buf[..]);
        r.next("").map(|m| m.name()).unwrap_err().to_string()
    };
    // A bitmap whose count does not match, or that is not whole words.
    let mut p = 5u64.to_le_bytes().to_vec();
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(&1u64.to_le_bytes());
    assert!(decode(kind::POSTCOPY_BEGIN, &p).contains("announces 5 pages but its bitmap has 1"));
    p.push(0);
    assert!(decode(kind::POSTCOPY_BEGIN, &p).contains("whole 64-bit words"));
    // Requests of no page, too many pages, or at an unaligned address.
    let req = |gpa: u64, pages: u32| {
        let mut p = gpa.to_le_bytes().to_vec();
        p.extend_from_slice(&pages.to_le_bytes());
        p.extend_from_slice(&[0; 4]);
        decode(kind::PAGE_REQUEST, &p)
    };
    assert!(req(0, 0).contains("asks for 0 pages"));
    assert!(req(0, PageRequest::MAX_PAGES + 1).contains("asks for 257 pages"));
    assert!(req(0x1001, 1).contains("not page aligned"));
    // Truncated: a PostcopyEnd of 8 bytes.
    assert!(decode(kind::POSTCOPY_END, &[0; 8]).contains("too short"));
    // Lease grants with unknown flags, or answering a request never sent.
    let grant = |seq: u64, flags: u32| {
        let mut p = seq.to_le_bytes().to_vec();
        p.extend_from_slice(&flags.to_le_bytes());
        p.extend_from_slice(&[0; 4]);
        decode(kind::LEASE_GRANT, &p)
    };
    assert!(grant(1, 2).contains("unknown flags 0x2"));
    assert!(grant(0, 0).contains("request 0"));
    assert!(decode(kind::LEASE_REQUEST, &[0; 4]).contains("too short"));
    // A Reattached whose count does not match its bitmap.
    let mut p = 3u64.to_le_bytes().to_vec();
    p.extend_from_slice(&1u64.to_le_bytes());
    assert!(decode(kind::REATTACHED, &p).contains("announces 3 pages but its bitmap has 1"));
}

#[test]
fn postcopy_needs_version_2() {
    assert_eq!(Capabilities::POSTCOPY.for_version(1), Capabilities::NONE);
    assert_eq!(
        Capabilities::POSTCOPY.for_version(2),
        Capabilities::POSTCOPY
    );
    assert!(Capabilities::SUPPORTED.contains(Capabilities::POSTCOPY));
    assert!(Capabilities::SUPPORTED.contains(Capabilities::DRAIN));
}

#[test]
fn every_corrupted_byte_is_detected() {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf);
    w.commit(42).unwrap();
    w.abort(AbortCode::Cancelled, "stop").unwrap();
    for i in 0..buf.len() {
        for bit in [0x01u8, 0x80] {
            let mut b = buf.clone();
            b[i] ^= bit;
            let mut r = MessageReader::new(&b[..]);
            let first = r.next("").map(|m| m.name());
            let second = r.next("").map(|m| m.name());
            assert!(
                first.is_err() || second.is_err(),
                "flipping byte {i} bit {bit:#x} went unnoticed"
            );
        }
    }
}

#[test]
fn truncation_and_garbage_give_clear_errors() {
    let mut buf = Vec::new();
    MessageWriter::new(&mut buf).commit(1).unwrap();
    for cut in 1..buf.len() {
        let mut r = MessageReader::new(&buf[..cut]);
        let e = r.next("").unwrap_err().to_string();
        assert!(e.contains("truncated"), "cut at {cut}: {e}");
    }
    let garbage = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let e = MessageReader::new(&garbage[..]).next("").unwrap_err();
    assert!(e.is_corrupt(), "{e}");
    assert!(e.to_string().contains("frame 0"), "{e}");
}

#[test]
fn abort_text_is_clipped_and_unknown_codes_survive() {
    let mut buf = Vec::new();
    let long = "é".repeat(5000);
    let mut w = MessageWriter::new(&mut buf);
    w.abort(AbortCode::Unknown(999), &long).unwrap();
    match MessageReader::new(&buf[..]).next("").unwrap() {
        Message::Abort(a) => {
            assert_eq!(a.code, AbortCode::Unknown(999));
            assert!(a.message.len() <= MAX_TEXT);
            assert!(a.message.chars().all(|c| c == 'é'));
        }
        m => panic!("got {}", m.name()),
    }
}

#[test]
fn start_refuses_an_invalid_config() {
    let mut c = config();
    c.memory_bytes += 1;
    let mut buf = Vec::new();
    let e = MessageWriter::new(&mut buf)
        .start(&Start {
            migration_id: 1,
            page_size: 4096,
            flags: 0,
            config: c,
        })
        .unwrap_err();
    assert!(e.to_string().contains("memory"), "{e}");
}

type Sides = (Result<Session, WireError>, Result<Session, WireError>);

fn handshake(src_secret: Secret, dst_secret: Secret, src: Offer, dst: Offer) -> Sides {
    let (a, b) = UnixStream::pair().unwrap();
    let dest = thread::spawn(move || {
        let mut b = b;
        dest_handshake(&mut b, &dst_secret, &dst)
    });
    let mut r = MessageReader::new(a.try_clone().unwrap());
    let mut w = MessageWriter::new(a);
    let s = source_handshake(&mut r, &mut w, &src_secret, &src);
    drop((r, w));
    (s, dest.join().unwrap())
}

#[test]
fn handshake_succeeds_with_the_same_secret() {
    let (s, d) = handshake(
        secret("the same secret, 32 bytes long!!"),
        secret("the same secret, 32 bytes long!!"),
        Offer::default(),
        Offer::default(),
    );
    let (s, d) = (s.unwrap(), d.unwrap());
    assert_eq!(s.version, PROTOCOL_VERSION);
    assert_eq!(d.version, PROTOCOL_VERSION);
    assert_eq!(s.capabilities, d.capabilities);
}

#[test]
fn handshake_picks_the_highest_common_version() {
    let src = Offer {
        min_version: 1,
        max_version: 5,
        capabilities: Capabilities(0b111),
    };
    let dst = Offer {
        min_version: 1,
        max_version: 3,
        capabilities: Capabilities(0b101),
    };
    let (s, d) = handshake(
        secret("0123456789abcdef"),
        secret("0123456789abcdef"),
        src,
        dst,
    );
    let (s, d) = (s.unwrap(), d.unwrap());
    assert_eq!((s.version, d.version), (3, 3));
    assert_eq!(s.capabilities, Capabilities(0b101));
}

#[test]
fn a_version_1_peer_gets_no_postcopy() {
    // An old destination (version 1 only) and a new source offering post-copy.
    let old = Offer {
        min_version: 1,
        max_version: 1,
        capabilities: Capabilities::POSTCOPY,
    };
    let (s, d) = handshake(
        secret("0123456789abcdef"),
        secret("0123456789abcdef"),
        Offer::default(),
        old,
    );
    let (s, d) = (s.unwrap(), d.unwrap());
    assert_eq!((s.version, d.version), (1, 1));
    assert!(!s.capabilities.contains(Capabilities::POSTCOPY));
    assert!(!d.capabilities.contains(Capabilities::POSTCOPY));
    // Two new peers agree on it.
    let (s, _) = handshake(
        secret("0123456789abcdef"),
        secret("0123456789abcdef"),
        Offer::default(),
        Offer::default(),
    );
    assert!(s.unwrap().capabilities.contains(Capabilities::POSTCOPY));
}

#[test]
fn wrong_secret_fails_on_both_sides() {
    let (s, d) = handshake(
        secret("source secret 0123456789"),
        secret("destination secret 01234"),
        Offer::default(),
        Offer::default(),
    );
    let s = s.unwrap_err();
    let d = d.unwrap_err();
    assert!(matches!(s, WireError::AuthFailed(_)), "{s}");
    assert!(matches!(d, WireError::AuthFailed(_)), "{d}");
    assert!(s.to_string().contains("secret"), "{s}");
    assert!(d.to_string().contains("authentication failed"), "{d}");
}

#[test]
fn version_mismatch_is_refused_on_both_sides() {
    let src = Offer {
        min_version: 7,
        max_version: 9,
        capabilities: Capabilities::NONE,
    };
    let (s, d) = handshake(
        secret("0123456789abcdef"),
        secret("0123456789abcdef"),
        src,
        Offer::default(),
    );
    let s = s.unwrap_err().to_string();
    let d = d.unwrap_err().to_string();
    for e in [&s, &d] {
        assert!(e.contains("version mismatch"), "{e}");
        assert!(e.contains("7..=9") && e.contains("1..=2"), "{e}");
    }
}

#[test]
fn a_non_ferry_peer_is_refused() {
    let (a, b) = UnixStream::pair().unwrap();
    let dest = thread::spawn(move || {
        let mut b = b;
        dest_handshake(&mut b, &secret("0123456789abcdef"), &Offer::default())
    });
    use std::io::Write;
    (&a).write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
    a.shutdown(std::net::Shutdown::Write).unwrap();
    let e = dest.join().unwrap().unwrap_err();
    assert!(e.is_corrupt(), "{e}");
}

/// What a refused peer reads back: the frames the destination wrote.
fn answers(bytes: &[u8]) -> Vec<String> {
    let mut r = MessageReader::new(bytes);
    let mut out = Vec::new();
    while let Ok(m) = r.next("") {
        out.push(match m {
            Message::Abort(a) => format!("Abort({}): {}", a.code, a.message),
            m => m.name().to_string(),
        });
    }
    out
}

/// Runs the destination's handshake against `input` and returns its error
/// and what it wrote back.
fn refused(input: &[u8]) -> (WireError, Vec<String>) {
    let (a, b) = UnixStream::pair().unwrap();
    let dest = thread::spawn(move || {
        let mut b = b;
        dest_handshake(&mut b, &secret("0123456789abcdef"), &Offer::default())
    });
    use std::io::{Read, Write};
    (&a).write_all(input).unwrap();
    a.shutdown(std::net::Shutdown::Write).unwrap();
    let e = dest.join().unwrap().unwrap_err();
    let mut back = Vec::new();
    (&a).read_to_end(&mut back).unwrap();
    (e, answers(&back))
}

#[test]
fn a_refused_peer_learns_nothing_but_a_generic_refusal() {
    let generic = vec![format!("Abort(authentication failed): {REFUSAL}")];
    // Each input below ends where the destination stops reading (unread
    // bytes would make its close a reset that loses the answer).
    // Garbage: refused at the first frame header, whatever it says.
    let (e, back) = refused(b"GET / HT");
    assert!(e.to_string().contains("unknown kind 0x47"), "{e}");
    assert_eq!(back, generic);
    // A message of the session before authentication: Start's kind is not
    // even readable yet.
    let mut w = MessageWriter::new(Vec::new());
    w.accept(&Accept::default()).unwrap();
    let (e, back) = refused(&w.get_ref()[..8]);
    assert!(e.to_string().contains("unknown kind"), "{e}");
    assert_eq!(back, generic);
    // A Hello whose length claims 1 MiB is refused at its header.
    let mut frame = vec![kind::HELLO, 0, 0, 0];
    frame.extend_from_slice(&(1u32 << 20).to_le_bytes());
    let (e, back) = refused(&frame);
    assert!(e.to_string().contains("exceeds"), "{e}");
    assert!(
        e.to_string().contains(&HANDSHAKE_MAX_PAYLOAD.to_string()),
        "{e}"
    );
    assert_eq!(back, generic);
    // A well-formed Hello and a wrong proof: Welcome, then the same refusal.
    let mut w = MessageWriter::new(Vec::new());
    w.hello(&Hello {
        min_version: MIN_PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        capabilities: Capabilities::NONE,
        nonce: [3; NONCE_LEN],
    })
    .unwrap();
    w.auth_proof(&[4; NONCE_LEN]).unwrap();
    let (e, back) = refused(w.get_ref());
    assert!(matches!(e, WireError::AuthFailed(_)), "{e}");
    assert_eq!(back[0], "Welcome");
    assert_eq!(&back[1..], &generic[..]);
    // A peer that connects and closes is told nothing.
    let (e, back) = refused(b"");
    assert!(matches!(e, WireError::Closed { .. }), "{e}");
    assert!(back.is_empty(), "{back:?}");
}
