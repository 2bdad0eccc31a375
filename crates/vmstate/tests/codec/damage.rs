//! Damaged streams: corrupted bytes, truncation, garbage, read errors.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vmstate::record::kind;
use vmstate::{DecodeError, FrameWriter, read_snapshot};

use crate::common::{MemSink, NullSink, PAGE};
use crate::fixture::*;

#[test]
fn every_corrupted_byte_is_detected() {
    let f = fixture(5);
    let bytes = encode(&f);
    let mut corrupted = bytes.clone();
    for i in 0..bytes.len() {
        for flip in [1u8 << (i % 8), 0xff] {
            corrupted[i] ^= flip;
            let res = read_snapshot(&corrupted[..], &mut MemSink::default());
            assert!(
                res.is_err(),
                "flipping {flip:#x} at byte {i} of {} went unnoticed",
                bytes.len()
            );
            corrupted[i] = bytes[i];
        }
    }
}

#[test]
fn checksum_errors_name_frame_and_kind() {
    let f = fixture(5);
    let mut bytes = encode(&f);
    let offsets = frame_offsets(&bytes);
    // Frame 2 is the first Pages record; corrupt a data byte.
    bytes[offsets[2] + 8 + 8 + 100] ^= 0x40;
    let err = decode(&bytes).unwrap_err();
    assert!(
        matches!(err, DecodeError::Checksum { frame: 2, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("frame 2 (pages): checksum mismatch"),
        "{err}"
    );
}

#[test]
fn truncation_is_detected_everywhere() {
    let f = fixture(5);
    let bytes = encode(&f);
    let offsets = frame_offsets(&bytes);
    for cut in 0..bytes.len() {
        let err = decode(&bytes[..cut]).unwrap_err();
        if let Some(frame) = offsets.iter().position(|&o| o == cut) {
            assert!(
                matches!(err, DecodeError::MissingEnd { frame: got } if got == frame as u64),
                "cut at boundary {cut}: {err:?}"
            );
        } else {
            let frame = offsets.iter().rposition(|&o| o < cut).unwrap() as u64;
            assert!(
                matches!(err, DecodeError::Truncated { frame: got, .. } if got == frame),
                "cut at {cut}: {err:?}"
            );
        }
    }
    let cut = offsets[3] + 20;
    let msg = decode(&bytes[..cut]).unwrap_err().to_string();
    assert_eq!(msg, "truncated: stream ended inside frame 3 (pages)");
    let msg = decode(&bytes[..offsets[offsets.len() - 2]])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("without an End record"), "{msg}");
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_f00d);
    let f = fixture(6);
    let valid = encode(&f);
    let offsets = frame_offsets(&valid);
    let frames: Vec<&[u8]> = offsets.windows(2).map(|w| &valid[w[0]..w[1]]).collect();

    for round in 0..3000 {
        let input: Vec<u8> = match round % 4 {
            // Pure noise.
            0 => {
                let len = rng.random_range(0..2048);
                (0..len).map(|_| rng.random()).collect()
            }
            // A valid stream with a few bytes changed.
            1 => {
                let mut v = valid.clone();
                for _ in 0..rng.random_range(1..8) {
                    let i = rng.random_range(0..v.len());
                    v[i] = rng.random();
                }
                v.truncate(rng.random_range(v.len() / 2..=v.len()));
                v
            }
            // Valid frames shuffled, dropped and duplicated.
            2 => (0..rng.random_range(0..10))
                .flat_map(|_| frames[rng.random_range(0..frames.len())].iter().copied())
                .collect(),
            // Well-checksummed frames of state kinds with random payloads, after a valid prefix.
            _ => {
                let mut fw = FrameWriter::new(Vec::new());
                let keep = rng.random_range(0..frames.len());
                let mut v: Vec<u8> = frames[..keep].concat();
                for _ in 0..rng.random_range(1..4) {
                    let k = rng.random_range(0..=7u8);
                    let len = match rng.random_range(0..4) {
                        0 => 24,
                        1 => 16,
                        2 => 8 + PAGE,
                        _ => rng.random_range(0..64),
                    };
                    let mut p: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                    if k == kind::PAGES && p.len() >= 8 && rng.random() {
                        p[..8].copy_from_slice(
                            &(rng.random_range(0..32u64) * PAGE as u64).to_le_bytes(),
                        );
                    }
                    let _ = fw.write_frame(k, 0, &[&p]);
                }
                v.extend_from_slice(&fw.into_inner());
                v
            }
        };
        if input == valid {
            continue;
        }
        let res = read_snapshot(&input[..], &mut MemSink::default());
        assert!(res.is_err(), "round {round}: garbage accepted");
    }
}

#[test]
fn read_errors_are_io_errors() {
    struct Broken;
    impl std::io::Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
    let err = read_snapshot(Broken, &mut NullSink).unwrap_err();
    assert_eq!(err.to_string(), "read failed in frame 0: disk on fire");
}
