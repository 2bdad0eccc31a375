//! Well-formed frames the reader refuses: versions, order, limits.

use vmstate::record::kind;
use vmstate::{
    DecodeError, FrameReader, FrameWriter, Kinds, ReadLimits, SinkError, SnapshotSink, VmConfig,
    read_snapshot, read_snapshot_with_limits,
};

use crate::common::{NullSink, PAGE};
use crate::fixture::*;

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
