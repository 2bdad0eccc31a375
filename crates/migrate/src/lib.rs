//! Ferry's live-migration engine.
//!
//! - [`migrate`] runs the source side: Setup -> Iterative rounds ->
//!   StopAndCopy -> StateTransfer -> Commit -> Done, rolling back (the VM
//!   resumes on the source) on any failure before Commit.
//! - [`receive`] runs the destination side: the VM runs there only after
//!   Commit; sources authenticate first at the gate [`listen`] opens.
//! - A [`Strategy`] decides each round; `stop-and-copy`, `xen`, `downtime`,
//!   `predictive`, `delayed` and `auto-converge` are provided, and
//!   `postcopy` and `hybrid`, which end in post-copy (the VM runs on the
//!   destination before its memory has arrived; pages follow, requested
//!   ones first) ([`StrategyKind`] parses their names, [`StrategyParams`]
//!   their parameters). [`Limits`] bound pre-copy (the strategy's own, or
//!   the operator's) and [`OnTimeout`] says what happens when a bound is
//!   reached.
//! - The VMM plugs in through [`SourceVm`], [`VmFactory`] and [`DestinationVm`];
//!   [`fake`] implements them in memory for tests, and [`faults`] injects
//!   network failures into a migration.
//! - An [`Observer`] in [`SourceOptions`] hears each phase, round and the
//!   end of a migration ([`MigrationEvent`]).
//!
//! docs/MIGRATION.md describes the state machine, strategies and safety argument;
//! docs/PROTOCOL.md the wire protocol.

mod bitmap;
mod convergence;
mod dest;
mod error;
mod events;
pub mod fake;
pub mod faults;
mod history;
mod limiter;
mod progress;
mod report;
mod source;
mod strategy;
mod vm;

pub use bitmap::{DirtyBitmap, LayoutError, PAGE_SIZE, PageLayout, RegionLayout, Runs, SetBits};
pub use convergence::{LimitError, LimitReached, Limits, OnTimeout, OnTimeoutError};
#[cfg(feature = "fuzzing")]
pub use dest::fuzz_session;
pub use dest::{
    DEFAULT_RECOVERY_TIMEOUT, DestOptions, FAULT_BLOCK_PAGES, MAX_FAULT_BLOCK_PAGES, ReceiveReport,
    Received, accept_one, confirm_owned, listen, receive, receive_with,
};
pub use error::{MigrateError, VmOp};
pub use events::{MigrationEvent, Observer};
pub use history::PageHistory;
pub use limiter::TokenBucket;
pub use progress::{
    CancelToken, Phase, PostcopyRefused, PostcopySwitch, Progress, ProgressSnapshot,
};
pub use report::{MigrationReport, Outcome, PostcopyReport, RoundReport, VmLocation};
pub use source::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_LEASE, DEFAULT_MAX_DOWNTIME, DEFAULT_STALL_TIMEOUT,
    DEFAULT_SYNC_INTERVAL, Journal, MAX_ROUNDS, MigrationFailure, PostcopyResume, SourceOptions,
    Switched, lease_margin, migrate, migrate_stream, resume_postcopy,
};
pub use strategy::{
    AdaptiveRateParams, AutoConverge, AutoConvergeParams, DEFAULT_STRATEGY, Decision, Delayed,
    DelayedParams, DowntimeParams, DowntimeTarget, Hybrid, HybridParams, Known, Postcopy,
    Predictive, PredictiveParams, RoundPlan, STRATEGIES, SmoothingParams, StopAndCopy, Strategy,
    StrategyContext, StrategyError, StrategyKind, StrategyParams, UnknownStrategy, Xen, XenEnd,
    XenParams,
};
pub use vm::{Capture, DestinationVm, Fence, PostcopyMemory, SourceVm, TxnVm, VmError, VmFactory};
pub use wire::gate::{Admitted, Gate, GateLimits, GateStats};
pub use wire::{Secret, Session, WireError};
