//! One VM encoded, and ways to take its stream apart.

use vmstate::frame::{FRAME_HEADER_LEN, FRAME_TRAILER_LEN};
use vmstate::{
    DecodeError, FrameReader, FrameWriter, Kinds, SnapshotWriter, VmConfig, VmState, read_snapshot,
};

use crate::common::{MemSink, cbor, config, memory, state};

pub const LOW: u64 = 64 << 10;
pub const HIGH: u64 = 32 << 10;

pub struct Fixture {
    pub config: VmConfig,
    pub state: VmState,
    pub low: Vec<u8>,
    pub high: Vec<u8>,
}

pub fn fixture(stride: usize) -> Fixture {
    let config = config(LOW, HIGH);
    Fixture {
        state: state(&config),
        config,
        low: memory(LOW, stride, 1),
        high: memory(HIGH, stride, 2),
    }
}

pub fn encode(f: &Fixture) -> Vec<u8> {
    let mut w = SnapshotWriter::new(Vec::new(), &f.config).unwrap();
    w.memory(0, &f.low).unwrap();
    w.memory(1 << 32, &f.high).unwrap();
    w.finish(&f.state).unwrap().0
}

pub fn decode(bytes: &[u8]) -> Result<VmState, DecodeError> {
    Ok(read_snapshot(bytes, &mut MemSink::default())?.0)
}

/// Byte offsets where each frame starts, plus the stream length.
pub fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut out = vec![0];
    let mut at = 0;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += FRAME_HEADER_LEN + len + FRAME_TRAILER_LEN;
        out.push(at);
    }
    assert_eq!(at, bytes.len());
    out
}

pub fn assert_same_state(a: &VmState, b: &VmState) {
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

/// Re-encodes a stream's frames, letting `edit` change kind, flags and payload.
pub fn rewrite(bytes: &[u8], mut edit: impl FnMut(u64, &mut u8, &mut u8, &mut Vec<u8>)) -> Vec<u8> {
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
