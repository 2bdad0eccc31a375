//! A source that comes back after its post-copy link broke, played by
//! hand against a real destination: a wrong secret is refused at the gate,
//! a wrong migration id is told so, and only the right one goes on, from
//! the pages the destination holds.

use std::io::{BufReader, BufWriter};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;

use migrate::fake::{FakeFactory, fake_state};
use migrate::*;
use vmstate::VmConfig;
use wire::{
    Message, MessageReader, MessageWriter, Offer, PostcopyEnd, Reattach, RoundBegin, RoundEnd,
    Start,
};

use crate::harness::*;

const MIB: u64 = 1 << 20;
const ID: u64 = 0x5eed;

fn config() -> VmConfig {
    VmConfig {
        memory_bytes: MIB,
        vcpus: 1,
        regions: vec![(0, MIB)],
        cmdline: String::new(),
        kernel: "test".into(),
        tsc_khz: 1_000_000,
    }
}

type Link = (
    MessageReader<BufReader<TcpStream>>,
    MessageWriter<BufWriter<TcpStream>>,
    TcpStream,
);

/// Connects and authenticates with `secret`.
fn dial(addr: std::net::SocketAddr, secret: &Secret) -> Result<Link, wire::WireError> {
    let s = TcpStream::connect(addr).unwrap();
    let mut r = MessageReader::new(BufReader::new(s.try_clone().unwrap()));
    let mut w = MessageWriter::new(BufWriter::new(s.try_clone().unwrap()));
    wire::source_handshake(&mut r, &mut w, secret, &Offer::default())?;
    Ok((r, w, s))
}

/// Start, one round with page 0, the switch with pages 1-3 to fetch,
/// State, Ready, Commit, Resumed.
fn switch(link: &mut Link) {
    let (r, w, _) = link;
    w.start(&Start {
        migration_id: ID,
        page_size: 4096,
        flags: 0,
        config: config(),
    })
    .unwrap();
    w.flush().unwrap();
    assert_eq!(r.next("").unwrap().name(), "Accept");
    w.round_begin(&RoundBegin {
        round: 1,
        flags: 0,
        pages: 256,
    })
    .unwrap();
    w.pages(0, &[1u8; 4096]).unwrap();
    w.round_end(&RoundEnd {
        round: 1,
        pages: 1,
        zero_pages: 0,
    })
    .unwrap();
    w.postcopy_begin(&[0b1110, 0, 0, 0], 0).unwrap();
    w.state(&fake_state(&config(), b"token".to_vec())).unwrap();
    w.flush().unwrap();
    assert_eq!(r.next("").unwrap().name(), "Ready");
    w.commit(ID).unwrap();
    w.flush().unwrap();
    assert_eq!(r.next("").unwrap().name(), "Resumed");
}

#[test]
fn only_the_same_migration_with_the_same_secret_reattaches() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let factory = FakeFactory::default();
    let f = factory.clone();
    let dest = thread::spawn(move || {
        let mut f = f;
        accept_one(listener, &mut f, &dest_opts(1 << 30))
    });
    let mut link = dial(addr, &secret()).unwrap();
    switch(&mut link);
    // Page 1 arrives, then the link breaks.
    link.1.pages(0x1000, &[2u8; 4096]).unwrap();
    link.1.flush().unwrap();
    link.2.shutdown(Shutdown::Both).unwrap();
    // A wrong secret is refused at the gate.
    let wrong = Secret::from_bytes(&[9u8; 32]).unwrap();
    let e = dial(addr, &wrong).map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("authentication failed"), "{e}");
    // The right secret but another migration: told so, and closed.
    let (mut r, mut w, _s) = dial(addr, &secret()).unwrap();
    w.reattach(&Reattach {
        migration_id: ID + 1,
    })
    .unwrap();
    w.flush().unwrap();
    match r.next("") {
        Ok(Message::Abort(a)) => assert!(a.message.contains("no migration"), "{}", a.message),
        m => panic!("expected an Abort, got {:?}", m.map(|m| m.name())),
    }
    // The same migration: the destination holds page 1; pages 2-3 follow.
    let (mut r, mut w, _s) = dial(addr, &secret()).unwrap();
    w.reattach(&Reattach { migration_id: ID }).unwrap();
    w.flush().unwrap();
    match r.next("").unwrap() {
        Message::Reattached(b) => {
            assert_eq!(b.pages, 1);
            assert_eq!(b.bitmap[0], 0b10);
        }
        m => panic!("expected Reattached, got {}", m.name()),
    }
    w.pages(0x2000, &[3u8; 8192]).unwrap();
    w.postcopy_end(&PostcopyEnd {
        pages: 3,
        zero_pages: 0,
    })
    .unwrap();
    w.flush().unwrap();
    loop {
        match r.next("").unwrap() {
            Message::PostcopyDone(d) => {
                assert_eq!(d.pages, 3);
                break;
            }
            Message::PageRequest(_) => continue,
            m => panic!("expected PostcopyDone, got {}", m.name()),
        }
    }
    let received = dest.join().unwrap().expect("the destination goes on");
    assert_eq!(received.report.reconnects, 1);
    let log = factory.log();
    assert_eq!((log.resumed, log.discarded), (1, 0), "{log:?}");
}
