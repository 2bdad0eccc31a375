//! The frame layer on its own, and kinds from the protocol range.

use std::io::Cursor;

use vmstate::record::{self, kind};
use vmstate::{
    DecodeError, EncodeError, FrameReader, FrameWriter, Kinds, MAX_PAYLOAD, ReadLimits, Totals,
    read_snapshot_frames,
};

use crate::common::MemSink;
use crate::fixture::*;

#[test]
fn frame_layer_checks_and_protocol_kinds() {
    // Kinds from the range this crate leaves to protocols (wire has its own).
    const GREETING: u8 = kind::PROTOCOL_MIN + 1;
    let mut fw = FrameWriter::new(Vec::new());
    fw.write_frame(GREETING, 0x80, &[&b"abc"[..], &[], &b"def"[..]])
        .unwrap();
    record::write_end(&mut fw, &Totals::default()).unwrap();
    let bytes = fw.into_inner();

    // A protocol reader knows its own kinds plus the state records.
    let kinds = Kinds::state_records().with(GREETING, "greeting");
    let mut fr = FrameReader::new(&bytes[..], kinds.clone());
    let frame = fr.next_frame().unwrap().unwrap();
    assert_eq!(
        (frame.kind.kind, frame.flags, frame.payload),
        (GREETING, 0x80, &b"abcdef"[..])
    );
    assert_eq!(frame.kind.to_string(), "greeting");
    assert_eq!(fr.next_frame().unwrap().unwrap().kind.kind, kind::END);
    assert!(fr.next_frame().unwrap().is_none());

    // The state reader does not.
    let mut fr = FrameReader::new(&bytes[..], Kinds::state_records());
    let err = fr.next_frame().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("frame 0: unknown kind {GREETING:#04x}")
    );

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
    const FAREWELL: u8 = kind::PROTOCOL_MIN + 2;
    let f = fixture(4);
    let mut bytes = encode(&f);
    let mut fw = FrameWriter::new(Vec::new());
    fw.write_frame(FAREWELL, 0, &[b"done"]).unwrap();
    bytes.extend_from_slice(&fw.into_inner());

    let mut fr = FrameReader::new(
        Cursor::new(&bytes),
        Kinds::state_records().with(FAREWELL, "farewell"),
    );
    let mut sink = MemSink::default();
    let (got, _) = read_snapshot_frames(&mut fr, &mut sink, &ReadLimits::default()).unwrap();
    assert_same_state(&f.state, &got);
    let next = fr.next_frame().unwrap().unwrap();
    assert_eq!((next.kind.kind, next.payload), (FAREWELL, &b"done"[..]));
}
