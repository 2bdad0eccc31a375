//! The encoding end to end: round trips, and every kind of bad input
//! (corruption, truncation, versions, limits, garbage) refused with the
//! right error and never a panic.

mod common;

use std::io::Cursor;

use common::{MemSink, NullSink, PAGE, cbor, config, memory, state};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vmstate::record::{self, kind};
use vmstate::{
    DecodeError, EncodeError, FrameReader, FrameWriter, Kinds, MAX_PAYLOAD, ReadLimits, SinkError,
    SnapshotSink, SnapshotWriter, Totals, VmConfig, VmState, read_snapshot, read_snapshot_frames,
    read_snapshot_with_limits, write_snapshot,
};

const LOW: u64 = 64 << 10;
const HIGH: u64 = 32 << 10;

struct Fixture {
    config: VmConfig,
    state: VmState,
    low: Vec<u8>,
    high: Vec<u8>,
}

fn fixture(stride: usize) -> Fixture {
    let config = config(LOW, HIGH);
    Fixture {
        state: state(&config),
        config,
        low: memory(LOW, stride, 1),
        high: memory(HIGH, stride, 2),
    }
}

fn encode(f: &Fixture) -> Vec<u8> {
    let mut w = SnapshotWriter::new(Vec::new(), &f.config).unwrap();
    w.memory(0, &f.low).unwrap();
    w.memory(1 << 32, &f.high).unwrap();
    w.finish(&f.state).unwrap().0
}

fn decode(bytes: &[u8]) -> Result<VmState, DecodeError> {
    Ok(read_snapshot(bytes, &mut MemSink::default())?.0)
}

/// Byte offsets where each frame starts, plus the stream length.
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = vec![0];
    let mut at = 0;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 12 + len;
        out.push(at);
    }
    assert_eq!(at, bytes.len());
    out
}

fn assert_same_state(a: &VmState, b: &VmState) {
    assert_eq!(a.config, b.config);
    assert_eq!(a.vcpus.len(), b.vcpus.len());
    assert_eq!(
        a.vcpus.last().unwrap().regs.rip,
        b.vcpus.last().unwrap().regs.rip
    );
    assert_eq!(a.vcpus[0].xsave.region, b.vcpus[0].xsave.region);
    assert_eq!(a.devices, b.devices);
    assert_eq!(cbor(a), cbor(b), "states differ");
}

#[test]
fn round_trip_restores_state_and_memory() {
    let f = fixture(3);
    let bytes = encode(&f);
    let mut sink = MemSink::default();
    let (got, stats) = read_snapshot(&bytes[..], &mut sink).unwrap();
    assert_same_state(&f.state, &got);
    assert_eq!(sink.config.as_ref(), Some(&f.config));
    assert_eq!(sink.regions[0].1, f.low);
    assert_eq!(sink.regions[1].1, f.high);
    // Every third page written: 6 of 16 low, 3 of 8 high; zero pages not stored.
    assert_eq!(stats.pages, 6 + 3);
    assert_eq!(stats.zero_pages, 0);
    assert_eq!(stats.bytes, bytes.len() as u64);
    assert!(bytes.len() < 9 * PAGE + 64 * 1024, "zero pages were stored");
    // Each non-zero page is its own run here.
    assert_eq!(sink.page_calls, 9);
}

#[test]
fn writer_stats_match_reader_stats() {
    let f = fixture(1);
    let mut w = SnapshotWriter::new(Vec::new(), &f.config).unwrap();
    w.memory(0, &f.low).unwrap();
    w.memory(1 << 32, &f.high).unwrap();
    let (bytes, wstats) = w.finish(&f.state).unwrap();
    let (_, rstats) = read_snapshot(&bytes[..], &mut NullSink).unwrap();
    assert_eq!(wstats, rstats);
    assert_eq!(wstats.pages, (LOW + HIGH) / PAGE as u64);
    // Header, Config, one record per region (all pages non-zero, < 256), State, End.
    assert_eq!(wstats.frames, 6);
}

#[test]
fn write_snapshot_writes_runs_as_given_and_splits_large_runs() {
    let config = VmConfig {
        memory_bytes: 2 << 20,
        vcpus: 1,
        regions: vec![(0, 1 << 20), (1 << 20, 1 << 20)],
        cmdline: String::new(),
        kernel: "idle".into(),
        tsc_khz: 1,
    };
    let st = state(&config);
    let mem = memory(2 << 20, 2, 7);
    let mut out = Vec::new();
    // One run crossing the region boundary; zero pages inside it are kept as data.
    let stats = write_snapshot(&mut out, &st, [(0u64, &mem[..])]).unwrap();
    assert_eq!(stats.pages, 512);
    // 2 regions x 1 MiB = 2 records of 256 pages.
    assert_eq!(stats.frames, 2 + 2 + 2);
    let mut sink = MemSink::default();
    let (got, _) = read_snapshot(&out[..], &mut sink).unwrap();
    assert_same_state(&st, &got);
    assert_eq!(sink.regions[0].1, mem[..1 << 20]);
    assert_eq!(sink.regions[1].1, mem[1 << 20..]);
}

#[test]
fn zero_pages_override_earlier_data_in_order() {
    let f = fixture(1);
    let mut w = SnapshotWriter::new(Vec::new(), &f.config).unwrap();
    w.pages(0, &f.low).unwrap();
    w.zero_pages(PAGE as u64 * 2, 3).unwrap();
    w.zero_pages(PAGE as u64 * 5, 1).unwrap(); // merged with the run before
    w.zero_pages(1 << 32, 2).unwrap();
    w.pages(PAGE as u64 * 4, &f.low[4 * PAGE..5 * PAGE])
        .unwrap(); // page 4 written again
    let (bytes, stats) = w.finish(&f.state).unwrap();
    assert_eq!(stats.zero_pages, 6);
    let mut sink = MemSink::default();
    let (_, rstats) = read_snapshot(&bytes[..], &mut sink).unwrap();
    assert_eq!(rstats, stats);
    assert_eq!(sink.zero_calls, 2, "adjacent runs merge");
    let mut want = f.low.clone();
    want[2 * PAGE..4 * PAGE].fill(0);
    want[5 * PAGE..6 * PAGE].fill(0);
    assert_eq!(sink.regions[0].1, want);
}

#[test]
fn writer_refuses_bad_runs_and_states() {
    let f = fixture(1);
    let mut w = SnapshotWriter::new(Vec::new(), &f.config).unwrap();
    assert!(matches!(
        w.pages(1, &f.low[..PAGE]),
        Err(EncodeError::Unaligned { .. })
    ));
    assert!(matches!(
        w.pages(0, &f.low[..100]),
        Err(EncodeError::Unaligned { .. })
    ));
    let err = w.pages(LOW, &f.low[..PAGE]).unwrap_err();
    assert!(matches!(err, EncodeError::OutsideMemory { .. }));
    assert_eq!(
        err.to_string(),
        "pages 0x10000..0x11000 lie outside guest memory"
    );
    assert!(matches!(
        w.memory(LOW - PAGE as u64, &f.low[..2 * PAGE]),
        Err(EncodeError::OutsideMemory { .. })
    ));
    assert!(matches!(
        w.zero_pages(LOW, 1),
        Err(EncodeError::OutsideMemory { .. })
    ));
    let mut other = state(&f.config);
    other.config.cmdline.push('x');
    assert!(matches!(w.finish(&other), Err(EncodeError::ConfigMismatch)));

    let mut wrong_version = state(&f.config);
    wrong_version.version = 99;
    let w = SnapshotWriter::new(Vec::new(), &f.config).unwrap();
    assert!(matches!(
        w.finish(&wrong_version),
        Err(EncodeError::StateVersion { found: 99, .. })
    ));

    let mut bad = f.config.clone();
    bad.memory_bytes += 1;
    assert!(matches!(
        SnapshotWriter::new(Vec::new(), &bad),
        Err(EncodeError::InvalidConfig(_))
    ));
}

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

/// Re-encodes a stream's frames, letting `edit` change kind, flags and payload.
fn rewrite(bytes: &[u8], mut edit: impl FnMut(u64, &mut u8, &mut u8, &mut Vec<u8>)) -> Vec<u8> {
    let mut fr = FrameReader::new(bytes, Kinds::state_records());
    let mut fw = FrameWriter::new(Vec::new());
    while let Some(frame) = fr.next_frame().unwrap() {
        let (mut k, mut flags, mut payload) =
            (frame.kind.kind, frame.flags, frame.payload.to_vec());
        edit(frame.index, &mut k, &mut flags, &mut payload);
        fw.write_frame(k, flags, &[&payload]).unwrap();
    }
    fw.into_inner()
}

#[test]
fn unknown_versions_are_refused() {
    let f = fixture(5);
    let bytes = encode(&f);
    let future_format = rewrite(&bytes, |i, _, _, p| {
        if i == 0 {
            p[8..12].copy_from_slice(&7u32.to_le_bytes());
            p.extend_from_slice(b"a longer future header");
        }
    });
    let err = decode(&future_format).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported format version 7 (this Ferry reads 1)"
    );

    let future_state = rewrite(&bytes, |i, _, _, p| {
        if i == 0 {
            p[12..16].copy_from_slice(&2u32.to_le_bytes());
        }
    });
    let err = decode(&future_state).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported VM state version 2 (this Ferry reads 1)"
    );

    let not_ferry = rewrite(&bytes, |i, _, _, p| {
        if i == 0 {
            p[..8].copy_from_slice(b"QEVM\0\0\0\x03");
        }
    });
    assert!(matches!(decode(&not_ferry), Err(DecodeError::NotFerry(_))));
    assert!(matches!(
        decode(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"),
        Err(DecodeError::NotFerry(_))
    ));
    assert!(matches!(
        decode(b""),
        Err(DecodeError::MissingEnd { frame: 0 })
    ));
}

#[test]
fn records_out_of_order_or_inconsistent_are_refused() {
    let f = fixture(5);
    let bytes = encode(&f);
    let n = frame_offsets(&bytes).len() as u64 - 1;

    // Pages before Config.
    let swapped = rewrite(&bytes, |i, k, _, p| {
        if i == 1 {
            *k = kind::PAGES;
            *p = [0u64.to_le_bytes().to_vec(), vec![1; PAGE]].concat();
        }
    });
    let err = decode(&swapped).unwrap_err();
    assert_eq!(
        err.to_string(),
        "frame 1 (pages): not expected here, expected config"
    );

    // End totals that do not match what was carried.
    for (word, what) in [(0usize, "pages"), (1, "zero pages"), (2, "records")] {
        let lying = rewrite(&bytes, |i, _, _, p| {
            if i == n - 1 {
                let v = u64::from_le_bytes(p[word * 8..word * 8 + 8].try_into().unwrap()) + 1;
                p[word * 8..word * 8 + 8].copy_from_slice(&v.to_le_bytes());
            }
        });
        match decode(&lying).unwrap_err() {
            DecodeError::TotalsMismatch { what: got, .. } => assert_eq!(got, what),
            e => panic!("{e:?}"),
        }
    }

    // A dropped Pages record is caught by the End totals.
    let mut fr = FrameReader::new(&bytes[..], Kinds::state_records());
    let mut fw = FrameWriter::new(Vec::new());
    while let Some(frame) = fr.next_frame().unwrap() {
        if frame.index != 3 {
            fw.write_frame(frame.kind.kind, frame.flags, &[frame.payload])
                .unwrap();
        }
    }
    assert!(matches!(
        decode(&fw.into_inner()),
        Err(DecodeError::TotalsMismatch { .. })
    ));

    // Flags are not defined for state records.
    let flagged = rewrite(&bytes, |i, _, fl, _| {
        if i == 2 {
            *fl = 1;
        }
    });
    assert!(matches!(
        decode(&flagged),
        Err(DecodeError::Flags {
            frame: 2,
            flags: 1,
            ..
        })
    ));

    // Trailing bytes after End.
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        decode(&trailing),
        Err(DecodeError::TrailingData { .. })
    ));
}

#[test]
fn memory_beyond_config_or_limits_is_refused() {
    let f = fixture(5);
    let bytes = encode(&f);

    // Pages record pointing past the end of the low region.
    let outside = rewrite(&bytes, |i, _, _, p| {
        if i == 2 {
            p[..8].copy_from_slice(&(LOW - PAGE as u64 + (1 << 20)).to_le_bytes());
        }
    });
    let err = decode(&outside).unwrap_err();
    assert!(
        matches!(err, DecodeError::OutsideMemory { frame: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("lie outside guest memory"));

    // A Pages record running past the end of its region.
    let spanning = rewrite(&bytes, |i, _, _, p| {
        if i == 2 {
            p[..8].copy_from_slice(&(LOW - PAGE as u64).to_le_bytes());
            p.extend_from_slice(&[3; PAGE]);
        }
    });
    assert!(matches!(
        decode(&spanning),
        Err(DecodeError::OutsideMemory { .. })
    ));

    // Announced memory above the destination's limit.
    let limits = ReadLimits {
        max_memory_bytes: LOW,
    };
    let err = read_snapshot_with_limits(&bytes[..], &mut NullSink, &limits).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "frame 1 (config): the stream announces {} bytes of guest memory, more than the {LOW} allowed",
            LOW + HIGH
        )
    );

    // A config that does not describe a machine.
    let bad_config = rewrite(&bytes, |i, _, _, p| {
        if i == 1 {
            let mut c: VmConfig = ciborium::from_reader(&p[..]).unwrap();
            c.regions[1].0 = PAGE as u64; // overlaps region 0
            p.clear();
            ciborium::into_writer(&c, &mut *p).unwrap();
        }
    });
    assert!(matches!(
        decode(&bad_config),
        Err(DecodeError::InvalidConfig { frame: 1, .. })
    ));

    // The sink refuses.
    struct Stingy;
    impl SnapshotSink for Stingy {
        fn config(&mut self, c: &VmConfig) -> Result<(), SinkError> {
            Err(format!("cannot allocate {} bytes", c.memory_bytes).into())
        }
        fn pages(&mut self, _: u64, _: &[u8]) -> Result<(), SinkError> {
            Ok(())
        }
        fn zero_pages(&mut self, _: u64, _: u64) -> Result<(), SinkError> {
            Ok(())
        }
    }
    let err = read_snapshot(&bytes[..], &mut Stingy).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "frame 1 (config): refused by the destination: cannot allocate {} bytes",
            LOW + HIGH
        )
    );
}

#[test]
fn frame_layer_checks_and_protocol_kinds() {
    const HELLO: u8 = 0x41;
    let mut fw = FrameWriter::new(Vec::new());
    fw.write_frame(HELLO, 0x80, &[&b"abc"[..], &[], &b"def"[..]])
        .unwrap();
    record::write_end(&mut fw, &Totals::default()).unwrap();
    let bytes = fw.into_inner();

    // A protocol reader knows its own kinds plus the state records.
    let kinds = Kinds::state_records().with(HELLO, "hello");
    let mut fr = FrameReader::new(&bytes[..], kinds.clone());
    let frame = fr.next_frame().unwrap().unwrap();
    assert_eq!(
        (frame.kind.kind, frame.flags, frame.payload),
        (HELLO, 0x80, &b"abcdef"[..])
    );
    assert_eq!(frame.kind.to_string(), "hello");
    assert_eq!(fr.next_frame().unwrap().unwrap().kind.kind, kind::END);
    assert!(fr.next_frame().unwrap().is_none());

    // The state reader does not.
    let mut fr = FrameReader::new(&bytes[..], Kinds::state_records());
    let err = fr.next_frame().unwrap_err();
    assert_eq!(err.to_string(), "frame 0: unknown kind 0x41");

    // Reserved field must be zero.
    let mut reserved = bytes.clone();
    reserved[2] = 1;
    let mut fr = FrameReader::new(&reserved[..], kinds.clone());
    assert!(matches!(
        fr.next_frame(),
        Err(DecodeError::Reserved { reserved: 1, .. })
    ));

    // Oversize lengths, from both sides.
    let mut fw = FrameWriter::new(std::io::sink());
    let big = vec![0u8; MAX_PAYLOAD as usize];
    let err = fw.write_frame(kind::PAGES, 0, &[&big, b"x"]).unwrap_err();
    assert!(
        matches!(err, EncodeError::PayloadTooLarge { .. }),
        "{err:?}"
    );
    let mut header = vec![kind::PAGES, 0, 0, 0];
    header.extend_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
    let mut fr = FrameReader::new(&header[..], Kinds::state_records());
    let err = fr.next_frame().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "frame 0 (pages): payload length {} exceeds the maximum {MAX_PAYLOAD}",
            MAX_PAYLOAD + 1
        )
    );
    let mut fr = FrameReader::new(&bytes[..], kinds).with_max_payload(5);
    assert!(matches!(
        fr.next_frame(),
        Err(DecodeError::Oversize { len: 6, max: 5, .. })
    ));
}

#[test]
fn a_snapshot_can_be_embedded_in_a_protocol_stream() {
    const BYE: u8 = 0x42;
    let f = fixture(4);
    let mut bytes = encode(&f);
    let mut fw = FrameWriter::new(Vec::new());
    fw.write_frame(BYE, 0, &[b"done"]).unwrap();
    bytes.extend_from_slice(&fw.into_inner());

    let mut fr = FrameReader::new(Cursor::new(&bytes), Kinds::state_records().with(BYE, "bye"));
    let mut sink = MemSink::default();
    let (got, _) = read_snapshot_frames(&mut fr, &mut sink, &ReadLimits::default()).unwrap();
    assert_same_state(&f.state, &got);
    let next = fr.next_frame().unwrap().unwrap();
    assert_eq!((next.kind.kind, next.payload), (BYE, &b"done"[..]));
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
