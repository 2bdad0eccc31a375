//! Ferry's migration protocol, on top of `vmstate` frames.
//!
//! Every message is one checksummed frame (`vmstate::frame`); protocol
//! messages use kinds 0x40-0xff, page data and device state travel as the
//! vmstate records Pages, ZeroPages and State. A connection starts with a
//! handshake ([`source_handshake`] / [`dest_handshake`]: version negotiation and mutual HMAC-SHA256
//! challenge-response over a shared secret), then carries one migration:
//! Start/Accept, rounds of pages, the final round and State, then the
//! Ready/Commit/Resumed switchover; with post-copy (version 2), the switch
//! (PostcopyBegin) comes before State and the pages follow the Commit,
//! requested ones first (PageRequest), until PostcopyEnd/PostcopyDone. Every listening socket admits its peers
//! through a [`gate::Gate`]: concurrent handshakes with a deadline, bounded,
//! refusals logged at a bounded rate. docs/PROTOCOL.md is the full description.

mod abort;
mod auth;
mod error;
pub mod gate;
mod handshake;
mod message;

pub use abort::{Abort, AbortCode};
pub use auth::{MIN_SECRET_LEN, Secret, Transcript, nonce};
pub use error::WireError;
pub use handshake::{
    MIN_PROTOCOL_VERSION, Offer, PROTOCOL_VERSION, REFUSAL, Session, dest_handshake,
    source_handshake,
};
pub use message::{
    Accept, Capabilities, Drain, HANDSHAKE_MAX_PAYLOAD, HELLO_MAGIC, Hello, LeaseGrant,
    LeaseRequest, MAX_CONFIG_LEN, MAX_TEXT, Message, MessageReader, MessageWriter, NONCE_LEN,
    PageRequest, PostcopyBegin, PostcopyDone, PostcopyEnd, Reattach, Reattached, Resumed,
    RoundBegin, RoundEnd, Stale, Start, TxnAck, TxnBegin, TxnEnd, TxnPlan, Welcome,
    handshake_kinds, kind, protocol_kinds,
};
/// Re-exported so users of this crate need not depend on vmstate for page records.
pub use vmstate::record::{MAX_PAGES_PER_RECORD, MAX_ZERO_RUNS_PER_RECORD, PAGE_SIZE, ZeroRuns};
