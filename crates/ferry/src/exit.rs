//! The exit statuses of `ferry`, one meaning each (docs/CLI.md lists which
//! subcommand uses which).

use migrate::{MigrationReport, Outcome};

/// Success.
pub const OK: i32 = 0;
/// Failure: an error line on stderr. A migration that fails before Commit
/// was rolled back: the VM runs on the source.
pub const FAILED: i32 = 1;
/// Bad usage: an unknown flag or a bad value (clap's own status).
pub const USAGE: i32 = 2;
/// The migration completed, but its downtime exceeded the target.
pub const DOWNTIME_MISSED: i32 = 3;
/// Commit was sent but not acknowledged: the VM is stopped on the source
/// and may or may not run on the destination (docs/PROTOCOL.md).
pub const IN_DOUBT: i32 = 4;

/// The status a migration with this report ends `ferry migrate` with.
pub fn of_migration(report: &MigrationReport) -> i32 {
    match report.outcome {
        Outcome::Completed if report.downtime_target_missed => DOWNTIME_MISSED,
        Outcome::Completed => OK,
        Outcome::InDoubt(_) => IN_DOUBT,
        Outcome::Interrupted(_) => INTERRUPTED,
        // The VM runs on the source again, as after a rollback.
        Outcome::Cancelled | Outcome::Failed(_) | Outcome::Recovered(_) => FAILED,
    }
}

/// Post-copy was interrupted before the destination held every page: the
/// VM is paused on the source and runs nowhere (docs/PROTOCOL.md,
/// "Post-copy failures").
pub const INTERRUPTED: i32 = 5;

/// The status a process that hosted a VM ends with.
pub fn of_hosting(ended: node::Ended) -> i32 {
    match ended {
        node::Ended::GuestExit(code) => code,
        node::Ended::ShutDown | node::Ended::Migrated => OK,
        node::Ended::InDoubt => IN_DOUBT,
        node::Ended::Interrupted => INTERRUPTED,
    }
}

/// An error that ends the process with `code` rather than [`FAILED`].
#[derive(Debug)]
pub struct Coded {
    pub code: i32,
    pub error: anyhow::Error,
}

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Coded {}

/// The status an error ends the process with.
pub fn of_error(e: &anyhow::Error) -> i32 {
    e.downcast_ref::<Coded>().map_or(FAILED, |c| c.code)
}
