//! Seed inputs of the cargo-fuzz targets (fuzz/, scripts/fuzz.sh) for the
//! transaction messages (TxnPlan, TxnBegin, TxnEnd, TxnAck) and Drain /
//! Drained, kept in fuzz/seeds/<target>/ and written here on stable Rust
//! (nightly is only needed to fuzz):
//!
//! - `frame_decoder`: each message as a valid frame, checked to decode;
//! - `receiver`: programs in that target's op language (ops 1-15 of
//!   fuzz/fuzz_targets/receiver.rs) that reach post-copy and then send the
//!   message, so the fuzzer starts next to the destination's handling of it.
//!
//! The test fails when a stored seed differs from what it generates; run it
//! with `FERRY_WRITE_SEEDS=1` to (re)write them.

use std::path::{Path, PathBuf};

use wire::{Drain, Message, MessageReader, MessageWriter, TxnAck, TxnBegin, TxnEnd, TxnPlan, kind};

fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target)
}

/// Compares (or, with FERRY_WRITE_SEEDS set, writes) the seeds of `target`.
fn check(target: &str, seeds: &[(&str, Vec<u8>)]) {
    let dir = seeds_dir(target);
    let write = std::env::var_os("FERRY_WRITE_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, bytes) in seeds {
        let path = dir.join(format!("{name}.bin"));
        if write {
            std::fs::write(&path, bytes).unwrap();
        }
        let stored = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with FERRY_WRITE_SEEDS=1)", path.display()));
        assert_eq!(
            &stored,
            bytes,
            "{} is stale: run with FERRY_WRITE_SEEDS=1",
            path.display()
        );
    }
}

/// Each message of the six kinds as one frame.
fn frames() -> Vec<(&'static str, u8, Vec<u8>)> {
    let one = |f: &dyn Fn(&mut MessageWriter<&mut Vec<u8>>)| {
        let mut v = Vec::new();
        f(&mut MessageWriter::new(&mut v));
        v
    };
    vec![
        (
            "txn_plan",
            kind::TXN_PLAN,
            one(&|w| {
                w.txn_plan(&TxnPlan {
                    interval_ns: 100_000_000,
                })
                .unwrap()
            }),
        ),
        (
            "txn_begin",
            kind::TXN_BEGIN,
            one(&|w| w.txn_begin(&TxnBegin { seq: 1 }).unwrap()),
        ),
        (
            "txn_end",
            kind::TXN_END,
            one(&|w| {
                w.txn_end(&TxnEnd {
                    seq: 1,
                    pages: 2,
                    zero_pages: 1,
                })
                .unwrap()
            }),
        ),
        (
            "txn_ack",
            kind::TXN_ACK,
            one(&|w| w.txn_ack(&TxnAck { seq: 1 }).unwrap()),
        ),
        (
            "drain",
            kind::DRAIN,
            one(&|w| w.drain(&Drain { seq: 1 }).unwrap()),
        ),
        (
            "drained",
            kind::DRAINED,
            one(&|w| w.drained(&Drain { seq: 1 }).unwrap()),
        ),
    ]
}

#[test]
fn frame_decoder_seeds_are_valid_frames_of_each_kind() {
    let frames = frames();
    assert_eq!(
        frames.iter().map(|f| f.1).collect::<Vec<_>>(),
        [0x58, 0x59, 0x5a, 0x5b, 0x5e, 0x5f]
    );
    for (name, k, bytes) in &frames {
        let mut r = MessageReader::new(&bytes[..]);
        let m = r.next("seed").unwrap_or_else(|e| panic!("{name}: {e}"));
        let ok = matches!(
            (m, *k),
            (Message::TxnPlan(_), kind::TXN_PLAN)
                | (Message::TxnBegin(_), kind::TXN_BEGIN)
                | (Message::TxnEnd(_), kind::TXN_END)
                | (Message::TxnAck(_), kind::TXN_ACK)
                | (Message::Drain(_), kind::DRAIN)
                | (Message::Drained(_), kind::DRAINED)
        );
        assert!(ok, "{name} decodes as another message");
    }
    let seeds: Vec<(&str, Vec<u8>)> = frames.into_iter().map(|(n, _, b)| (n, b)).collect();
    check("frame_decoder", &seeds);
}

/// The receiver target's ops (fuzz/fuzz_targets/receiver.rs: the low four
/// bits of an op byte choose it, the high four are its argument).
mod op {
    pub const ROUND_BEGIN: u8 = 1;
    /// RoundBegin of the final (paused) round.
    pub const FINAL: u8 = 1 << 4;
    pub const PAGES: u8 = 2;
    pub const ROUND_END: u8 = 4;
    pub const STATE: u8 = 5;
    /// Commit of migration 1 (the one Start names).
    pub const COMMIT: u8 = 6;
    pub const POSTCOPY_BEGIN: u8 = 9;
    /// PostcopyBegin with a lease.
    pub const WITH_LEASE: u8 = 1 << 4;
    pub const POSTCOPY_END: u8 = 10;
    pub const TXN_PLAN: u8 = 11;
    pub const TXN_BEGIN: u8 = 12;
    pub const TXN_END: u8 = 13;
    pub const TXN_ACK: u8 = 14;
    /// Drain; with the top bit set, Drained.
    pub const DRAIN: u8 = 15;
}

/// A receiver program: one region of 64 pages, a round of one page with
/// `in_round` after it, the post-copy switch over the whole region with a
/// lease, then `tail`.
fn program(in_round: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut p = vec![
        0,  // shape: one region, one vCPU
        63, // its pages: 1 + 63, so the set (a u16 in every lane) fits it
        op::ROUND_BEGIN,
        op::PAGES,
        0, // region 0
        0,
        0, // page 0
    ];
    p.extend_from_slice(in_round);
    p.extend_from_slice(&[
        op::ROUND_END,
        op::POSTCOPY_BEGIN | op::WITH_LEASE,
        0xff,
        0xff,
    ]);
    p.extend_from_slice(tail);
    p
}

/// A pre-copy receiver program: as [`program`], without the switch to
/// post-copy; a final round, State and Commit end it.
fn precopy(in_round: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 63, op::ROUND_BEGIN, op::PAGES, 0, 0, 0];
    p.extend_from_slice(in_round);
    // An empty final round (RoundBegin with its FINAL flag), State, Commit.
    p.extend_from_slice(&[
        op::ROUND_END,
        op::ROUND_BEGIN | op::FINAL,
        op::ROUND_END,
        op::STATE,
        op::COMMIT,
    ]);
    p
}

#[test]
fn receiver_seeds_reach_post_copy_then_send_each_message() {
    let seq1 = 1 << 4;
    // State then Commit (migration 1): the VM runs in post-copy.
    let resumed = [op::STATE, op::COMMIT];
    let seeds = vec![
        (
            "txn_plan",
            program(&[], &[op::TXN_PLAN, 0x10, 0x27, op::STATE, op::COMMIT]),
        ),
        (
            "txn_ack",
            program(
                &[],
                &[&resumed[..], &[op::TXN_ACK | seq1, op::POSTCOPY_END, 8]].concat(),
            ),
        ),
        (
            "txn_begin_end",
            program(
                &[],
                &[
                    &resumed[..],
                    &[op::TXN_BEGIN | seq1, op::TXN_END | seq1, 0, 0],
                ]
                .concat(),
            ),
        ),
        ("drain", precopy(&[op::DRAIN | seq1])),
        ("drained", precopy(&[op::DRAIN | 0x80 | seq1])),
        (
            "everything",
            program(
                &[op::DRAIN | seq1],
                &[
                    op::TXN_PLAN,
                    0x10,
                    0x27,
                    op::STATE,
                    op::COMMIT,
                    op::TXN_ACK | seq1,
                    op::TXN_BEGIN | (2 << 4),
                    op::TXN_END | (2 << 4),
                    1,
                    1,
                    op::DRAIN | 0x80 | (2 << 4),
                    op::POSTCOPY_END,
                    8,
                ],
            ),
        ),
    ];
    // The ops exist in the target as numbered here.
    let target = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets/receiver.rs"),
    )
    .unwrap();
    for arm in [
        "9 => {",
        "let lease_ns = u64::from(op >> 4 & 1)",
        "6 => w.commit(if op >> 4 == 0 { 1 } else { 2 })",
        "10 => w.postcopy_end",
        "11 => w.txn_plan",
        "12 => w.txn_begin",
        "13 => w.txn_end",
        "14 => w.txn_ack",
        "15 => {",
    ] {
        assert!(target.contains(arm), "receiver.rs has no op `{arm}`");
    }
    check("receiver", &seeds);
}
