//! What the source engine tells an observer while a migration runs: each
//! phase entered, each round's numbers, and the end. A host forwards them
//! (Ferry's process turns them into its API's event stream and its logs);
//! the engine never waits for anyone but the observer call itself.

use std::sync::Arc;

use crate::progress::{Phase, Progress};
use crate::report::{MigrationReport, RoundReport};

/// One thing that happened in a migration.
#[derive(Clone, Copy, Debug)]
pub enum MigrationEvent<'a> {
    /// The migration entered this phase ([`Phase::RolledBack`] on any
    /// failure before Commit).
    Phase(Phase),
    /// A round ended (the stop-and-copy round too; `interrupted` if it
    /// ended on the failure).
    Round(&'a RoundReport),
    /// The migration ended: the final report says how and where the VM runs.
    Finished(&'a MigrationReport),
}

/// Receives a migration's events, in order, on the migration's thread. It
/// must return quickly (e.g. push into a bounded queue): the guest may be
/// paused while it runs.
pub type Observer = Arc<dyn Fn(&MigrationEvent<'_>) + Send + Sync>;

/// Tells `observer`, if any.
pub(crate) fn notify(observer: Option<&Observer>, event: MigrationEvent<'_>) {
    if let Some(o) = observer {
        o(&event);
    }
}

/// Sets the live progress's phase and tells the observer.
pub(crate) fn enter(progress: &Progress, observer: Option<&Observer>, phase: Phase) {
    progress.set_phase(phase);
    notify(observer, MigrationEvent::Phase(phase));
}
