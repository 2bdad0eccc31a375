//! Protocol messages (frame kinds 0x40-0xff) and their payload layouts.
//! All integers are little endian. Layouts are documented in docs/PROTOCOL.md.
//! Decoding, writing and reading live in the submodules.

mod decode;
mod reader;
mod writer;

use vmstate::frame::Kinds;
use vmstate::record::{self, ZeroRuns};
use vmstate::{VmConfig, VmState};

use crate::abort::Abort;

pub use reader::MessageReader;
pub use writer::MessageWriter;

/// Frame kinds of the protocol messages. 0x50-0x57 are post-copy's
/// (protocol version 2, capability [`Capabilities::POSTCOPY`]; 0x54-0x55
/// its lease, 0x56-0x57 its reconnection, 0x58-0x5b its transaction
/// synchronization); 0x5c-0x5f are set aside for several streams and
/// compression (docs/PROTOCOL.md); 0x60 is Stale; 0x61 is post-copy's
/// Owned; 0x62-0xff are free.
pub mod kind {
    pub const HELLO: u8 = 0x40;
    pub const WELCOME: u8 = 0x41;
    pub const VERSION_REFUSED: u8 = 0x42;
    pub const AUTH_PROOF: u8 = 0x43;
    pub const AUTH_OK: u8 = 0x44;
    pub const START: u8 = 0x45;
    pub const ACCEPT: u8 = 0x46;
    pub const ROUND_BEGIN: u8 = 0x47;
    pub const ROUND_END: u8 = 0x48;
    pub const READY: u8 = 0x49;
    pub const COMMIT: u8 = 0x4a;
    pub const RESUMED: u8 = 0x4b;
    pub const ABORT: u8 = 0x4c;
    pub const POSTCOPY_BEGIN: u8 = 0x50;
    pub const PAGE_REQUEST: u8 = 0x51;
    pub const POSTCOPY_END: u8 = 0x52;
    pub const POSTCOPY_DONE: u8 = 0x53;
    pub const LEASE_REQUEST: u8 = 0x54;
    pub const LEASE_GRANT: u8 = 0x55;
    pub const REATTACH: u8 = 0x56;
    pub const REATTACHED: u8 = 0x57;
    pub const TXN_PLAN: u8 = 0x58;
    pub const TXN_BEGIN: u8 = 0x59;
    pub const TXN_END: u8 = 0x5a;
    pub const TXN_ACK: u8 = 0x5b;
    pub const DRAIN: u8 = 0x5e;
    pub const DRAINED: u8 = 0x5f;
    pub const STALE: u8 = 0x60;
    pub const OWNED: u8 = 0x61;
}

/// First bytes of every Hello: lets a destination tell a Ferry source from
/// anything else that connects, whatever its protocol version.
pub const HELLO_MAGIC: [u8; 8] = *b"FERRYMIG";
/// Length of nonces and HMAC-SHA256 proofs.
pub const NONCE_LEN: usize = 32;
/// Longest Abort / VersionRefused text accepted.
pub const MAX_TEXT: usize = 4096;
/// Largest CBOR-encoded VmConfig accepted in Start.
pub const MAX_CONFIG_LEN: usize = 64 * 1024;
/// Largest payload a destination reads before the source has authenticated:
/// a Hello of any version (later versions may append fields, up to this
/// size), an AuthProof, or an Abort with a short text.
pub const HANDSHAKE_MAX_PAYLOAD: u32 = 512;

/// Payload of a version-1 Hello (later versions may append fields).
const HELLO_LEN: usize = 56;
/// Payload of a Welcome.
const WELCOME_LEN: usize = 80;

/// Optional protocol features, negotiated in Hello/Welcome as the
/// intersection of both sides' sets (and of what the chosen version
/// defines: [`Capabilities::for_version`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(pub u64);

impl Capabilities {
    pub const NONE: Capabilities = Capabilities(0);
    /// Post-copy (version 2 on): the source may switch the VM over before
    /// its memory has arrived, and the destination requests pages.
    pub const POSTCOPY: Capabilities = Capabilities(1 << 0);
    /// Page data may arrive on several TCP streams. Reserved.
    pub const MULTI_STREAM: Capabilities = Capabilities(1 << 1);
    /// Pages records may be compressed. Reserved.
    pub const COMPRESSION: Capabilities = Capabilities(1 << 2);
    /// The destination answers a [`Drain`] once it has applied everything
    /// sent before it (version 2 on): the source pauses the VM only when
    /// the stream has no backlog, so none of it counts as downtime.
    pub const DRAIN: Capabilities = Capabilities(1 << 3);
    /// The source announces each pre-copy round's dirtied pages in a
    /// [`Stale`] (version 2 on): the destination drops its old copies while
    /// the VM still runs on the source, so a switch to post-copy drops
    /// almost nothing in the pause.
    pub const STALE: Capabilities = Capabilities(1 << 4);
    /// What this implementation supports.
    pub const SUPPORTED: Capabilities =
        Capabilities(Self::POSTCOPY.0 | Self::DRAIN.0 | Self::STALE.0);

    /// The capabilities protocol `version` defines, out of `self`: a
    /// version-1 session has none, whatever the bits say.
    pub fn for_version(self, version: u16) -> Capabilities {
        if version >= 2 {
            self
        } else {
            Capabilities::NONE
        }
    }

    pub fn intersect(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0)
    }

    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Source -> destination, first frame of every connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub min_version: u16,
    pub max_version: u16,
    pub capabilities: Capabilities,
    pub nonce: [u8; NONCE_LEN],
}

/// Destination -> source: the chosen version and the destination's proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    pub version: u16,
    pub capabilities: Capabilities,
    pub nonce: [u8; NONCE_LEN],
    pub proof: [u8; NONCE_LEN],
}

/// Source -> destination: the VM to be migrated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    /// Random id of this migration attempt (echoed in Commit).
    pub migration_id: u64,
    /// Guest page size the source tracks and sends (4096).
    pub page_size: u32,
    /// [`Start::PAUSED`], or 0.
    pub flags: u32,
    pub config: VmConfig,
}

impl Start {
    /// The VM was paused on the source when the migration began: the
    /// destination leaves it paused after Commit.
    pub const PAUSED: u32 = 1;
    /// Every flag this version knows; a Start with others is refused.
    pub const KNOWN_FLAGS: u32 = Self::PAUSED;
}

/// Destination -> source: the answer to Start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accept {
    /// [`Accept::POSTCOPY`], or 0 (version 1 sends 0).
    pub flags: u64,
}

impl Accept {
    /// The destination can run this VM before its memory has arrived
    /// (post-copy): the session negotiated [`Capabilities::POSTCOPY`] and
    /// its VMM can intercept missing pages.
    pub const POSTCOPY: u64 = 1;
    /// The destination can send transactions in post-copy ([`TxnPlan`]):
    /// its VMM tracks the pages the guest dirties and holds serial output.
    pub const TRANSACTIONS: u64 = 2;

    pub fn postcopy(&self) -> bool {
        self.flags & Self::POSTCOPY != 0
    }

    pub fn transactions(&self) -> bool {
        self.flags & Self::TRANSACTIONS != 0
    }
}

/// Source -> destination, the VM paused: the switch to post-copy. The pages
/// the destination must still fetch (never sent, or dirtied after their
/// last send) as a bitmap over the page index space of Start's regions
/// (each region starts on a 64-page boundary). State, then the usual
/// Ready/Commit/Resumed switchover, follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PostcopyBegin<'a> {
    /// Bits set in `bitmap` (a check on the bitmap).
    pub pages: u64,
    /// The running lease, ns: the destination runs the VM only while it
    /// holds one (Ready starts the first; each [`LeaseGrant`] extends it).
    /// 0: no lease (the VM runs until post-copy ends or breaks).
    pub lease_ns: u64,
    /// Little-endian u64 words, bit i of word w = page index 64 w + i.
    pub bitmap: &'a [u8],
}

/// Destination -> source during post-copy: the guest needs these pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// First page's guest-physical address (page aligned).
    pub gpa: u64,
    /// 1 to [`PageRequest::MAX_PAGES`].
    pub pages: u32,
}

impl PageRequest {
    /// Largest request: 1 MiB.
    pub const MAX_PAGES: u32 = 256;
}

/// Source -> destination: every page of the post-copy set has been sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PostcopyEnd {
    /// Pages sent as data since PostcopyBegin.
    pub pages: u64,
    /// Pages announced zero since PostcopyBegin.
    pub zero_pages: u64,
}

/// Destination -> source: it holds every page; the source may free the
/// VM's memory. With what the destination measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PostcopyDone {
    /// Pages installed since PostcopyBegin (data and zero).
    pub pages: u64,
    /// Faults on missing pages (touches that waited for the network).
    pub faults: u64,
    /// Median and 99th percentile of the time a faulting vCPU waited, ns.
    pub fault_p50_ns: u64,
    pub fault_p99_ns: u64,
}

/// Destination -> source during a leased post-copy, every quarter lease:
/// please extend my lease. The lease a grant gives counts from when this
/// request left (destination clock), so a grant delayed in the network
/// never stretches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRequest {
    /// 1, 2, 3, ... in the order sent.
    pub seq: u64,
}

/// Source -> destination: the answer to [`LeaseRequest`] `seq`. The
/// destination may run the VM until its request's send time plus the
/// lease of PostcopyBegin; with [`LeaseGrant::FINAL`] for ever (the source
/// freed its copy after PostcopyDone and can never take the VM back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The request answered (0 with FINAL: not an answer).
    pub seq: u64,
    pub flags: u32,
}

impl LeaseGrant {
    /// The VM is the destination's for good: no lease from now on.
    pub const FINAL: u32 = 1;
    /// Every flag this version knows.
    pub const KNOWN_FLAGS: u32 = Self::FINAL;

    pub fn is_final(&self) -> bool {
        self.flags & Self::FINAL != 0
    }
}

/// Source -> destination, the first message on a connection that
/// authenticated after the post-copy link broke: it continues migration
/// `migration_id` (Start's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reattach {
    pub migration_id: u64,
}

/// Destination -> source, the answer to [`Reattach`]: the pages of the
/// post-copy set it holds (installed), as a bitmap like PostcopyBegin's.
/// The source sends the rest of the set again from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reattached<'a> {
    /// Bits set in `bitmap`.
    pub pages: u64,
    pub bitmap: &'a [u8],
}

/// Source -> destination, between PostcopyBegin and State, when the
/// destination accepted [`Accept::TRANSACTIONS`] and a lease is set: send
/// a transaction every `interval_ns` while the VM runs in post-copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnPlan {
    /// Above zero.
    pub interval_ns: u64,
}

/// Destination -> source: transaction `seq` follows: Pages and ZeroPages
/// records for the pages the guest dirtied since transaction `seq - 1`
/// (PageRequests and LeaseRequests may come between them), then the State
/// record, then [`TxnEnd`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnBegin {
    /// 1, 2, 3, ... (after a reconnection: one above the last acknowledged).
    pub seq: u64,
}

/// Destination -> source: transaction `seq` is complete, with the counts
/// of what it carried (the source refuses one that does not add up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnEnd {
    pub seq: u64,
    /// Pages sent as data.
    pub pages: u64,
    /// Pages announced zero.
    pub zero_pages: u64,
}

/// Source -> destination: transaction `seq` is applied to the source's
/// copy; the destination may release the output it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnAck {
    pub seq: u64,
}

/// Start of a round of page data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundBegin {
    /// 1-based; the stop-and-copy round has [`RoundBegin::FINAL`] set.
    pub round: u32,
    pub flags: u32,
    /// Pages the source plans to examine this round (informational).
    pub pages: u64,
}

impl RoundBegin {
    /// The VM is paused on the source: this is the last round.
    pub const FINAL: u32 = 1;

    pub fn is_final(&self) -> bool {
        self.flags & Self::FINAL != 0
    }
}

/// End of a round of page data, with what the source sent in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundEnd {
    pub round: u32,
    /// Pages sent as data in Pages records this round.
    pub pages: u64,
    /// Pages announced zero in ZeroPages records this round.
    pub zero_pages: u64,
}

/// Destination -> source after Commit: the VM runs on the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resumed {
    /// Time from reading Commit to the vCPUs running, in ns (destination clock).
    pub commit_to_resume_ns: u64,
    /// Wall-clock time of the resume, ns since the Unix epoch (destination clock).
    pub resumed_unix_ns: u64,
}

/// One decoded message. Page data borrows from the reader's buffer.
#[derive(Debug)]
pub enum Message<'a> {
    Hello(Hello),
    Welcome(Welcome),
    /// The destination speaks none of the offered versions: its own range.
    VersionRefused {
        min_version: u16,
        max_version: u16,
    },
    AuthProof([u8; NONCE_LEN]),
    AuthOk,
    Start(Box<Start>),
    Accept(Accept),
    RoundBegin(RoundBegin),
    RoundEnd(RoundEnd),
    /// vmstate Pages record: whole pages starting at `gpa`.
    Pages {
        gpa: u64,
        data: &'a [u8],
    },
    /// vmstate ZeroPages record: runs of pages that are all zero.
    ZeroPages(ZeroRuns<'a>),
    /// vmstate State record: vCPU and device state.
    State(Box<VmState>),
    Ready,
    Commit {
        migration_id: u64,
    },
    Resumed(Resumed),
    Abort(Abort),
    PostcopyBegin(PostcopyBegin<'a>),
    PageRequest(PageRequest),
    PostcopyEnd(PostcopyEnd),
    PostcopyDone(PostcopyDone),
    LeaseRequest(LeaseRequest),
    LeaseGrant(LeaseGrant),
    Reattach(Reattach),
    Reattached(Reattached<'a>),
    TxnPlan(TxnPlan),
    TxnBegin(TxnBegin),
    TxnEnd(TxnEnd),
    TxnAck(TxnAck),
    Drain(Drain),
    Drained(Drain),
    Stale(Stale<'a>),
    /// Destination -> source: the VM is the destination's for good (it
    /// answers the FINAL grant, and a Reattach that comes after it).
    Owned {
        migration_id: u64,
    },
}

/// Source -> destination during pre-copy ([`Capabilities::STALE`]): these
/// pages were dirtied after their last send, so the destination's copies
/// are stale; each is sent again before the VM switches over (or is in the
/// post-copy set). A bitmap like PostcopyBegin's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stale<'a> {
    /// Bits set in `bitmap`.
    pub pages: u64,
    pub bitmap: &'a [u8],
}

/// Source -> destination: answer with [`Message::Drained`] and the same
/// sequence number once everything before this has been applied;
/// destination -> source: that answer ([`Capabilities::DRAIN`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drain {
    pub seq: u64,
}

impl Message<'_> {
    /// Short name for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Welcome(_) => "Welcome",
            Message::VersionRefused { .. } => "VersionRefused",
            Message::AuthProof(_) => "AuthProof",
            Message::AuthOk => "AuthOk",
            Message::Start(_) => "Start",
            Message::Accept(_) => "Accept",
            Message::RoundBegin(_) => "RoundBegin",
            Message::RoundEnd(_) => "RoundEnd",
            Message::Pages { .. } => "Pages",
            Message::ZeroPages(_) => "ZeroPages",
            Message::State(_) => "State",
            Message::Ready => "Ready",
            Message::Commit { .. } => "Commit",
            Message::Resumed(_) => "Resumed",
            Message::Abort(_) => "Abort",
            Message::PostcopyBegin(_) => "PostcopyBegin",
            Message::PageRequest(_) => "PageRequest",
            Message::PostcopyEnd(_) => "PostcopyEnd",
            Message::PostcopyDone(_) => "PostcopyDone",
            Message::LeaseRequest(_) => "LeaseRequest",
            Message::LeaseGrant(_) => "LeaseGrant",
            Message::Reattach(_) => "Reattach",
            Message::Reattached(_) => "Reattached",
            Message::TxnPlan(_) => "TxnPlan",
            Message::TxnBegin(_) => "TxnBegin",
            Message::TxnEnd(_) => "TxnEnd",
            Message::TxnAck(_) => "TxnAck",
            Message::Drain(_) => "Drain",
            Message::Stale(_) => "Stale",
            Message::Drained(_) => "Drained",
            Message::Owned { .. } => "Owned",
        }
    }
}

/// The frame kinds a destination accepts before authentication: Hello,
/// AuthProof and Abort. Anything else is refused at its frame header.
pub fn handshake_kinds() -> Kinds {
    Kinds::empty()
        .with(kind::HELLO, "Hello")
        .with(kind::AUTH_PROOF, "AuthProof")
        .with(kind::ABORT, "Abort")
}

/// The frame kinds a protocol reader accepts: the protocol messages plus
/// the Pages, ZeroPages and State records.
pub fn protocol_kinds() -> Kinds {
    Kinds::empty()
        .with(record::kind::PAGES, "Pages")
        .with(record::kind::ZERO_PAGES, "ZeroPages")
        .with(record::kind::STATE, "State")
        .with(kind::HELLO, "Hello")
        .with(kind::WELCOME, "Welcome")
        .with(kind::VERSION_REFUSED, "VersionRefused")
        .with(kind::AUTH_PROOF, "AuthProof")
        .with(kind::AUTH_OK, "AuthOk")
        .with(kind::START, "Start")
        .with(kind::ACCEPT, "Accept")
        .with(kind::ROUND_BEGIN, "RoundBegin")
        .with(kind::ROUND_END, "RoundEnd")
        .with(kind::READY, "Ready")
        .with(kind::COMMIT, "Commit")
        .with(kind::RESUMED, "Resumed")
        .with(kind::ABORT, "Abort")
        .with(kind::POSTCOPY_BEGIN, "PostcopyBegin")
        .with(kind::PAGE_REQUEST, "PageRequest")
        .with(kind::POSTCOPY_END, "PostcopyEnd")
        .with(kind::POSTCOPY_DONE, "PostcopyDone")
        .with(kind::LEASE_REQUEST, "LeaseRequest")
        .with(kind::LEASE_GRANT, "LeaseGrant")
        .with(kind::REATTACH, "Reattach")
        .with(kind::REATTACHED, "Reattached")
        .with(kind::TXN_PLAN, "TxnPlan")
        .with(kind::TXN_BEGIN, "TxnBegin")
        .with(kind::TXN_END, "TxnEnd")
        .with(kind::TXN_ACK, "TxnAck")
        .with(kind::DRAIN, "Drain")
        .with(kind::DRAINED, "Drained")
        .with(kind::STALE, "Stale")
        .with(kind::OWNED, "Owned")
}
