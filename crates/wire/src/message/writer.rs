//! Encoding messages and page records as frames.

use std::io::Write;

use vmstate::VmState;
use vmstate::frame::FrameWriter;
use vmstate::record;

use super::{
    Accept, Drain, HELLO_LEN, HELLO_MAGIC, Hello, LeaseGrant, LeaseRequest, MAX_TEXT, NONCE_LEN,
    PageRequest, PostcopyDone, PostcopyEnd, Reattach, Resumed, RoundBegin, RoundEnd, Start, TxnAck,
    TxnBegin, TxnEnd, TxnPlan, WELCOME_LEN, Welcome, kind,
};
use crate::abort::AbortCode;
use crate::error::WireError;

/// Writes protocol messages and page records as frames.
#[derive(Debug)]
pub struct MessageWriter<W: Write> {
    inner: FrameWriter<W>,
}

impl<W: Write> MessageWriter<W> {
    pub fn new(inner: W) -> Self {
        MessageWriter {
            inner: FrameWriter::new(inner),
        }
    }

    fn frame(&mut self, kind: u8, parts: &[&[u8]]) -> Result<(), WireError> {
        Ok(self.inner.write_frame(kind, 0, parts)?)
    }

    pub fn hello(&mut self, h: &Hello) -> Result<(), WireError> {
        let mut p = [0u8; HELLO_LEN];
        p[..8].copy_from_slice(&HELLO_MAGIC);
        p[8..10].copy_from_slice(&h.min_version.to_le_bytes());
        p[10..12].copy_from_slice(&h.max_version.to_le_bytes());
        p[16..24].copy_from_slice(&h.capabilities.0.to_le_bytes());
        p[24..56].copy_from_slice(&h.nonce);
        self.frame(kind::HELLO, &[&p])
    }

    pub fn welcome(&mut self, w: &Welcome) -> Result<(), WireError> {
        let mut p = [0u8; WELCOME_LEN];
        p[..2].copy_from_slice(&w.version.to_le_bytes());
        p[8..16].copy_from_slice(&w.capabilities.0.to_le_bytes());
        p[16..48].copy_from_slice(&w.nonce);
        p[48..80].copy_from_slice(&w.proof);
        self.frame(kind::WELCOME, &[&p])
    }

    pub fn version_refused(&mut self, min_version: u16, max_version: u16) -> Result<(), WireError> {
        let mut p = [0u8; 4];
        p[..2].copy_from_slice(&min_version.to_le_bytes());
        p[2..].copy_from_slice(&max_version.to_le_bytes());
        self.frame(kind::VERSION_REFUSED, &[&p])
    }

    pub fn auth_proof(&mut self, proof: &[u8; NONCE_LEN]) -> Result<(), WireError> {
        self.frame(kind::AUTH_PROOF, &[proof])
    }

    pub fn auth_ok(&mut self) -> Result<(), WireError> {
        self.frame(kind::AUTH_OK, &[])
    }

    pub fn start(&mut self, s: &Start) -> Result<(), WireError> {
        s.config.validate().map_err(vmstate::EncodeError::from)?;
        let mut head = [0u8; 16];
        head[..8].copy_from_slice(&s.migration_id.to_le_bytes());
        head[8..12].copy_from_slice(&s.page_size.to_le_bytes());
        head[12..16].copy_from_slice(&s.flags.to_le_bytes());
        let mut cbor = Vec::with_capacity(256);
        ciborium::into_writer(&s.config, &mut cbor).map_err(|e| {
            WireError::Encode(vmstate::EncodeError::Cbor {
                what: "VM config",
                msg: e.to_string(),
            })
        })?;
        self.frame(kind::START, &[&head, &cbor])
    }

    pub fn accept(&mut self, a: &Accept) -> Result<(), WireError> {
        self.frame(kind::ACCEPT, &[&a.flags.to_le_bytes()])
    }

    /// The switch to post-copy: `words` is the bitmap of pages still to
    /// fetch (its set bits are counted here); `lease_ns` the running lease
    /// (0: none).
    pub fn postcopy_begin(&mut self, words: &[u64], lease_ns: u64) -> Result<(), WireError> {
        let pages: u64 = words.iter().map(|w| u64::from(w.count_ones())).sum();
        let mut head = [0u8; 16];
        head[..8].copy_from_slice(&pages.to_le_bytes());
        head[8..].copy_from_slice(&lease_ns.to_le_bytes());
        let mut bitmap = Vec::with_capacity(words.len() * 8);
        for w in words {
            bitmap.extend_from_slice(&w.to_le_bytes());
        }
        self.frame(kind::POSTCOPY_BEGIN, &[&head, &bitmap])
    }

    pub fn page_request(&mut self, r: &PageRequest) -> Result<(), WireError> {
        let mut p = [0u8; 16];
        p[..8].copy_from_slice(&r.gpa.to_le_bytes());
        p[8..12].copy_from_slice(&r.pages.to_le_bytes());
        self.frame(kind::PAGE_REQUEST, &[&p])
    }

    pub fn postcopy_end(&mut self, e: &PostcopyEnd) -> Result<(), WireError> {
        let mut p = [0u8; 16];
        p[..8].copy_from_slice(&e.pages.to_le_bytes());
        p[8..].copy_from_slice(&e.zero_pages.to_le_bytes());
        self.frame(kind::POSTCOPY_END, &[&p])
    }

    pub fn postcopy_done(&mut self, d: &PostcopyDone) -> Result<(), WireError> {
        let mut p = [0u8; 32];
        p[..8].copy_from_slice(&d.pages.to_le_bytes());
        p[8..16].copy_from_slice(&d.faults.to_le_bytes());
        p[16..24].copy_from_slice(&d.fault_p50_ns.to_le_bytes());
        p[24..].copy_from_slice(&d.fault_p99_ns.to_le_bytes());
        self.frame(kind::POSTCOPY_DONE, &[&p])
    }

    pub fn lease_request(&mut self, r: &LeaseRequest) -> Result<(), WireError> {
        self.frame(kind::LEASE_REQUEST, &[&r.seq.to_le_bytes()])
    }

    pub fn lease_grant(&mut self, g: &LeaseGrant) -> Result<(), WireError> {
        let mut p = [0u8; 16];
        p[..8].copy_from_slice(&g.seq.to_le_bytes());
        p[8..12].copy_from_slice(&g.flags.to_le_bytes());
        self.frame(kind::LEASE_GRANT, &[&p])
    }

    pub fn drain(&mut self, d: &Drain) -> Result<(), WireError> {
        self.frame(kind::DRAIN, &[&d.seq.to_le_bytes()])
    }

    pub fn drained(&mut self, d: &Drain) -> Result<(), WireError> {
        self.frame(kind::DRAINED, &[&d.seq.to_le_bytes()])
    }

    pub fn reattach(&mut self, r: &Reattach) -> Result<(), WireError> {
        self.frame(kind::REATTACH, &[&r.migration_id.to_le_bytes()])
    }

    /// The answer to Reattach: `words` is the bitmap of the set's pages
    /// held here (its set bits are counted here).
    pub fn reattached(&mut self, words: &[u64]) -> Result<(), WireError> {
        self.counted_bitmap(kind::REATTACHED, words)
    }

    pub fn stale(&mut self, words: &[u64]) -> Result<(), WireError> {
        self.counted_bitmap(kind::STALE, words)
    }

    /// A message that is a page count and the bitmap it counts.
    fn counted_bitmap(&mut self, kind: u8, words: &[u64]) -> Result<(), WireError> {
        let pages: u64 = words.iter().map(|w| u64::from(w.count_ones())).sum();
        let mut bitmap = Vec::with_capacity(words.len() * 8);
        for w in words {
            bitmap.extend_from_slice(&w.to_le_bytes());
        }
        self.frame(kind, &[&pages.to_le_bytes(), &bitmap])
    }

    pub fn txn_plan(&mut self, p: &TxnPlan) -> Result<(), WireError> {
        self.frame(kind::TXN_PLAN, &[&p.interval_ns.to_le_bytes()])
    }

    pub fn txn_begin(&mut self, b: &TxnBegin) -> Result<(), WireError> {
        self.frame(kind::TXN_BEGIN, &[&b.seq.to_le_bytes()])
    }

    pub fn txn_end(&mut self, e: &TxnEnd) -> Result<(), WireError> {
        let mut p = [0u8; 24];
        p[..8].copy_from_slice(&e.seq.to_le_bytes());
        p[8..16].copy_from_slice(&e.pages.to_le_bytes());
        p[16..].copy_from_slice(&e.zero_pages.to_le_bytes());
        self.frame(kind::TXN_END, &[&p])
    }

    pub fn txn_ack(&mut self, a: &TxnAck) -> Result<(), WireError> {
        self.frame(kind::TXN_ACK, &[&a.seq.to_le_bytes()])
    }

    pub fn round_begin(&mut self, r: &RoundBegin) -> Result<(), WireError> {
        let mut p = [0u8; 16];
        p[..4].copy_from_slice(&r.round.to_le_bytes());
        p[4..8].copy_from_slice(&r.flags.to_le_bytes());
        p[8..].copy_from_slice(&r.pages.to_le_bytes());
        self.frame(kind::ROUND_BEGIN, &[&p])
    }

    pub fn round_end(&mut self, r: &RoundEnd) -> Result<(), WireError> {
        let mut p = [0u8; 24];
        p[..4].copy_from_slice(&r.round.to_le_bytes());
        p[8..16].copy_from_slice(&r.pages.to_le_bytes());
        p[16..].copy_from_slice(&r.zero_pages.to_le_bytes());
        self.frame(kind::ROUND_END, &[&p])
    }

    /// A Pages record: 1 to 256 whole pages at page-aligned `gpa`, written without a copy.
    pub fn pages(&mut self, gpa: u64, data: &[u8]) -> Result<(), WireError> {
        Ok(record::write_pages(&mut self.inner, gpa, data)?)
    }

    /// A ZeroPages record of (gpa, page count) runs.
    pub fn zero_pages(&mut self, runs: &[(u64, u64)]) -> Result<(), WireError> {
        Ok(record::write_zero_pages(&mut self.inner, runs)?)
    }

    /// The State record.
    pub fn state(&mut self, state: &VmState) -> Result<(), WireError> {
        Ok(record::write_state(&mut self.inner, state)?)
    }

    pub fn ready(&mut self) -> Result<(), WireError> {
        self.frame(kind::READY, &[])
    }

    pub fn commit(&mut self, migration_id: u64) -> Result<(), WireError> {
        self.frame(kind::COMMIT, &[&migration_id.to_le_bytes()])
    }

    pub fn owned(&mut self, migration_id: u64) -> Result<(), WireError> {
        self.frame(kind::OWNED, &[&migration_id.to_le_bytes()])
    }

    pub fn resumed(&mut self, r: &Resumed) -> Result<(), WireError> {
        let mut p = [0u8; 16];
        p[..8].copy_from_slice(&r.commit_to_resume_ns.to_le_bytes());
        p[8..].copy_from_slice(&r.resumed_unix_ns.to_le_bytes());
        self.frame(kind::RESUMED, &[&p])
    }

    pub fn abort(&mut self, code: AbortCode, message: &str) -> Result<(), WireError> {
        let mut head = [0u8; 4];
        head[..2].copy_from_slice(&code.to_u16().to_le_bytes());
        self.frame(kind::ABORT, &[&head, clip(message).as_bytes()])
    }

    /// Flushes the underlying writer (the frame layer itself does not buffer).
    pub fn flush(&mut self) -> Result<(), WireError> {
        Ok(self.inner.flush()?)
    }

    /// Bytes written so far, framing included.
    pub fn bytes_written(&self) -> u64 {
        self.inner.bytes_written()
    }

    pub fn get_ref(&self) -> &W {
        self.inner.get_ref()
    }

    pub fn get_mut(&mut self) -> &mut W {
        self.inner.get_mut()
    }
}

/// Cuts `s` to at most [`MAX_TEXT`] bytes at a character boundary.
fn clip(s: &str) -> &str {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
