//! Ferry's live-migration engine.
//!
//! - [`migrate`] runs the source side: Setup -> Iterative rounds ->
//!   StopAndCopy -> StateTransfer -> Commit -> Done, rolling back (the VM
//!   resumes on the source) on any failure before Commit.
//! - [`receive`] runs the destination side: the VM runs there only after
//!   Commit; sources authenticate first at the gate [`listen`] opens.
//! - A [`Strategy`] decides each round; `stop-and-copy`, `xen` and `downtime`
//!   are provided ([`StrategyKind`] parses their names). [`Limits`] bound
//!   pre-copy (the strategy's own, or the operator's) and [`OnTimeout`] says
//!   what happens when a bound is reached.
//! - The VMM plugs in through [`SourceVm`], [`VmFactory`] and [`DestinationVm`];
//!   [`fake`] implements them in memory for tests, and [`faults`] injects
//!   network failures into a migration.
//!
//! docs/MIGRATION.md describes the state machine, strategies and safety argument;
//! docs/PROTOCOL.md the wire protocol.

mod bitmap;
mod convergence;
mod dest;
mod error;
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
pub use convergence::{
    LimitError, LimitReached, Limits, OnTimeout, OnTimeoutError, PLANNED_ON_TIMEOUT,
};
#[cfg(feature = "fuzzing")]
pub use dest::fuzz_session;
pub use dest::{DestOptions, ReceiveReport, Received, accept_one, listen, receive};
pub use error::{MigrateError, VmOp};
pub use history::PageHistory;
pub use limiter::TokenBucket;
pub use progress::{CancelToken, Phase, Progress, ProgressSnapshot};
pub use report::{MigrationReport, Outcome, RoundReport, VmLocation};
pub use source::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_DOWNTIME, DEFAULT_STALL_TIMEOUT, MAX_ROUNDS,
    MigrationFailure, SourceOptions, migrate, migrate_stream,
};
pub use strategy::{
    DEFAULT_STRATEGY, Decision, DowntimeParams, DowntimeTarget, RoundPlan, STRATEGIES, StopAndCopy,
    Strategy, StrategyContext, StrategyKind, UnknownStrategy, Xen, XenParams,
};
pub use vm::{DestinationVm, SourceVm, VmError, VmFactory};
pub use wire::gate::{Admitted, Gate, GateLimits, GateStats};
pub use wire::{Secret, Session, WireError};
