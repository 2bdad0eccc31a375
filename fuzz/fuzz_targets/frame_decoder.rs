//! Feeds arbitrary bytes to the migration stream decoder: frame layer
//! (length, kind, reserved bits, checksum) and every message and record
//! parser behind it. Any input must give messages or a clean error, never a
//! panic, a hang, or an allocation beyond the frame limit.
//!
//! The checksum makes random payloads unreachable, so the input is read two
//! ways: as a raw stream, and as (kind, payload) pairs re-framed with a valid
//! checksum so the parsers behind the frame layer see arbitrary payloads.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::{Message, MessageReader};

fn drain(bytes: &[u8]) {
    let mut r = MessageReader::new(bytes);
    for _ in 0..64 {
        match r.next("fuzzing") {
            Ok(m) => {
                // Touch lazily decoded parts.
                if let Message::ZeroPages(runs) = m {
                    let _ = runs.count();
                }
            }
            Err(e) => {
                let _ = e.to_string();
                break;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    drain(data);

    // Re-frame: [kind, len_lo, len_hi, payload...]*
    let mut framed = Vec::new();
    let mut w = vmstate::FrameWriter::new(&mut framed);
    let mut rest = data;
    while rest.len() >= 3 {
        let kind = rest[0];
        let len = u16::from_le_bytes([rest[1], rest[2]]) as usize;
        let body = &rest[3..];
        let take = len.min(body.len());
        if w.write_frame(kind, 0, &[&body[..take]]).is_err() {
            break;
        }
        rest = &body[take..];
    }
    drain(&framed);
});
