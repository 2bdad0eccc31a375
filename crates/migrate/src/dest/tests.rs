//! The destination's state machine against hand-made streams: post-copy's
//! happy path and every kind of bad input, each refused with one error and
//! nothing of it installed.

use std::sync::Mutex;

use vm_memory::{Bytes, GuestAddress};
use vmstate::VmConfig;
use wire::{MessageReader, MessageWriter, PostcopyEnd, RoundBegin, RoundEnd, Start};

use super::session::Receiver;
use super::{DestOptions, ReceiveReport};
use crate::fake::{FakeFactory, fake_state};
use crate::{DestinationVm, MigrateError, Secret};

const MIB: u64 = 1 << 20;
const ID: u64 = 7;

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

/// Start, one round with page 0, then the switch with pages 1-3 to fetch.
fn switched(w: &mut MessageWriter<&mut Vec<u8>>) {
    w.start(&Start {
        migration_id: ID,
        page_size: 4096,
        flags: 0,
        config: config(),
    })
    .unwrap();
    let round = |w: &mut MessageWriter<&mut Vec<u8>>| {
        w.round_begin(&RoundBegin {
            round: 1,
            flags: 0,
            pages: 256,
        })
    };
    round(w).unwrap();
    w.pages(0, &[1u8; 4096]).unwrap();
    w.round_end(&RoundEnd {
        round: 1,
        pages: 1,
        zero_pages: 0,
    })
    .unwrap();
    let mut words = vec![0u64; 4];
    words[0] = 0b1110;
    w.postcopy_begin(&words, 0).unwrap();
    w.state(&fake_state(&config(), b"token".to_vec())).unwrap();
    w.commit(ID).unwrap();
}

/// Runs the session over `stream`; the VM is discarded on error.
fn receive(stream: &[u8], factory: &FakeFactory) -> Result<Vec<u8>, MigrateError> {
    let opts = DestOptions::new(Secret::from_bytes(&[0u8; 32]).unwrap(), 1 << 30);
    let mut f = factory.clone();
    let mut r = MessageReader::new(stream);
    let w = Mutex::new(MessageWriter::new(Vec::new()));
    let mut rx = Receiver::new(&opts, ReceiveReport::default());
    let result = rx.session(&mut r, &w, &mut f, None);
    let vm = rx.vm.take();
    match result {
        Ok(()) => {
            let vm = vm.unwrap();
            let mut mem = vec![0u8; 4 * 4096];
            vm.memory().read_slice(&mut mem, GuestAddress(0)).unwrap();
            assert_eq!(rx.report.postcopy_pages, 3);
            Ok(mem)
        }
        Err(e) => {
            if let Some(vm) = vm {
                vm.discard();
            }
            Err(e)
        }
    }
}

fn stream(f: impl FnOnce(&mut MessageWriter<&mut Vec<u8>>)) -> Vec<u8> {
    let mut buf = Vec::new();
    f(&mut MessageWriter::new(&mut buf));
    buf
}

fn refused(f: impl FnOnce(&mut MessageWriter<&mut Vec<u8>>)) -> String {
    let factory = FakeFactory::default();
    let e = receive(&stream(f), &factory).unwrap_err().to_string();
    let log = factory.log();
    assert_eq!(log.created, log.discarded, "{e}: {log:?}");
    e
}

#[test]
fn postcopy_pages_arrive_once_each_then_the_end() {
    let s = stream(|w| {
        switched(w);
        w.pages(0x1000, &[2u8; 4096]).unwrap();
        w.zero_pages(&[(0x2000, 1)]).unwrap();
        w.pages(0x3000, &[3u8; 4096]).unwrap();
        w.postcopy_end(&PostcopyEnd {
            pages: 2,
            zero_pages: 1,
        })
        .unwrap();
    });
    let mem = receive(&s, &FakeFactory::default()).unwrap();
    let page = |i: usize| &mem[i * 4096..(i + 1) * 4096];
    assert!(page(0).iter().all(|&b| b == 1));
    assert!(page(1).iter().all(|&b| b == 2));
    assert!(page(2).iter().all(|&b| b == 0));
    assert!(page(3).iter().all(|&b| b == 3));
}

#[test]
fn bad_postcopy_input_is_refused_with_one_error() {
    let e = refused(|w| {
        switched(w);
        w.pages(0x1000, &[2u8; 4096]).unwrap();
        w.pages(0x1000, &[9u8; 4096]).unwrap();
    });
    assert!(e.contains("page 0x1000 arrived twice"), "{e}");
    let e = refused(|w| {
        switched(w);
        w.pages(0x8000, &[2u8; 4096]).unwrap();
    });
    assert!(e.contains("page 0x8000 is not in the post-copy set"), "{e}");
    let e = refused(|w| {
        switched(w);
        w.pages(MIB, &[2u8; 4096]).unwrap();
    });
    assert!(e.contains("outside guest memory"), "{e}");
    let e = refused(|w| {
        switched(w);
        w.pages(0x1000, &[2u8; 4096]).unwrap();
        w.postcopy_end(&PostcopyEnd {
            pages: 3,
            zero_pages: 0,
        })
        .unwrap();
    });
    assert!(e.contains("PostcopyEnd after 1 of the 3 pages"), "{e}");
    // Commit again (after a reconnection) is answered; for another
    // migration it is refused.
    let e = refused(|w| {
        switched(w);
        w.commit(ID + 1).unwrap();
    });
    assert!(e.contains("expected post-copy pages, got Commit"), "{e}");
}

/// Start for a running VM of [`config`].
fn start(w: &mut MessageWriter<&mut Vec<u8>>) {
    w.start(&Start {
        migration_id: ID,
        page_size: 4096,
        flags: 0,
        config: config(),
    })
    .unwrap()
}

#[test]
fn a_switch_out_of_order_or_malformed_is_refused() {
    // Inside a round.
    let e = refused(|w| {
        start(w);
        w.round_begin(&RoundBegin {
            round: 1,
            flags: 0,
            pages: 1,
        })
        .unwrap();
        w.postcopy_begin(&[0; 4], 0).unwrap();
    });
    assert!(
        e.contains("unexpected PostcopyBegin (inside a round)"),
        "{e}"
    );
    // A bitmap for another machine, or naming pages past the memory.
    let e = refused(|w| {
        start(w);
        w.postcopy_begin(&[0; 5], 0).unwrap();
    });
    assert!(e.contains("the post-copy set has 40 bytes"), "{e}");
    // Pages before the switch are never sent after it twice, and a
    // post-copy page before Commit has no place.
    let e = refused(|w| {
        start(w);
        w.postcopy_begin(&[1, 0, 0, 0], 0).unwrap();
        w.pages(0, &[1u8; 4096]).unwrap();
    });
    assert!(e.contains("unexpected Pages"), "{e}");
    // A destination that did not accept post-copy.
    let factory = FakeFactory {
        no_postcopy: true,
        ..FakeFactory::default()
    };
    let s = stream(|w| {
        start(w);
        w.postcopy_begin(&[1, 0, 0, 0], 0).unwrap();
    });
    let e = receive(&s, &factory).unwrap_err().to_string();
    assert!(e.contains("did not accept post-copy"), "{e}");
}

#[test]
fn a_stale_set_is_checked_like_the_post_copy_set() {
    let e = refused(|w| {
        start(w);
        w.stale(&[0; 5]).unwrap();
    });
    assert!(e.contains("the stale set has 40 bytes"), "{e}");
    // A destination that did not accept post-copy is never sent one.
    let factory = FakeFactory {
        no_postcopy: true,
        ..FakeFactory::default()
    };
    let s = stream(|w| {
        start(w);
        w.stale(&[1, 0, 0, 0]).unwrap();
    });
    let e = receive(&s, &factory).unwrap_err().to_string();
    assert!(
        e.contains("Stale, but this destination did not accept"),
        "{e}"
    );
    // Accepted: the pages are forgotten, inside a round or between rounds.
    let factory = FakeFactory::default();
    let s = stream(|w| {
        start(w);
        w.stale(&[0b11, 0, 0, 0]).unwrap();
        w.round_begin(&RoundBegin {
            round: 1,
            flags: 0,
            pages: 1,
        })
        .unwrap();
        w.stale(&[0b100, 0, 0, 0]).unwrap();
    });
    let _ = receive(&s, &factory);
    assert_eq!(factory.log().stale_pages, 3);
}
