//! Round trips, and what the writer accepts and refuses.

use vmstate::{EncodeError, SnapshotWriter, VmConfig, read_snapshot, write_snapshot};

use crate::common::{MemSink, NullSink, PAGE, memory, state};
use crate::fixture::*;

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
