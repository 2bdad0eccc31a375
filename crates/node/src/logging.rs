//! How the VM's events are logged: once each, as `tracing` events with the
//! VM's and the migration's identity as fields (docs/LOGGING.md).

use api::events::{Event, EventKind};

/// Logs a VM or migration event once, with the VM's and the migration's
/// identity as fields; failures at warn, the rest at info.
pub fn event(e: &Event) {
    let what = describe(&e.kind);
    let kind = e.kind.name();
    let warn = matches!(
        e.kind,
        EventKind::MigrationRolledBack { .. }
            | EventKind::MigrationInDoubt { .. }
            | EventKind::MigrationInterrupted { .. }
            | EventKind::VmStopped { error: Some(_), .. }
    );
    match (e.kind.migration(), warn) {
        (Some(m), false) => tracing::info!(vm = %e.vm, migration = %m, event = kind, "{what}"),
        (Some(m), true) => tracing::warn!(vm = %e.vm, migration = %m, event = kind, "{what}"),
        (None, false) => tracing::info!(vm = %e.vm, event = kind, "{what}"),
        (None, true) => tracing::warn!(vm = %e.vm, event = kind, "{what}"),
    }
}

/// The event in words.
fn describe(kind: &EventKind) -> String {
    match kind {
        EventKind::VmCreated { state } => format!("VM created, {state}; the API answers"),
        EventKind::VmStarted { state } => format!("VM started, {state}"),
        EventKind::VmPaused { cause } => format!("VM paused ({})", cause_name(*cause)),
        EventKind::VmResumed { cause } => format!("VM resumed ({})", cause_name(*cause)),
        EventKind::VmStopped {
            reason,
            exit_status,
            error,
        } => match (exit_status, error) {
            (Some(code), _) => format!("VM stopped: {reason}, exit status {code}"),
            (_, Some(why)) => format!("VM stopped: {reason}: {why}"),
            _ => format!("VM stopped: {reason}"),
        },
        EventKind::MigrationStarted { to, strategy, .. } => {
            format!("migration to {to} started (strategy {strategy})")
        }
        EventKind::MigrationPhase { phase, .. } => format!("migration phase {phase}"),
        EventKind::MigrationRound { round: r, .. } => format!(
            "migration round {}{}: {} of {} pending pages sent, {} in {}, {} dirtied",
            r.round,
            if r.stop_and_copy { " (VM paused)" } else { "" },
            r.pages_sent,
            r.pages_pending,
            units::format_bytes(r.bytes),
            units::format_duration(std::time::Duration::from_secs_f64(
                r.duration_ms.max(0.0) / 1e3
            )),
            r.pages_dirtied
        ),
        EventKind::MigrationCompleted {
            to, downtime_ms, ..
        } => match downtime_ms {
            Some(d) => format!("migration completed: the VM runs on {to} (downtime {d:.1} ms)"),
            None => format!("migration completed: the VM runs on {to}"),
        },
        EventKind::MigrationRolledBack {
            cancelled, error, ..
        } => {
            if *cancelled {
                "migration cancelled and rolled back: the VM runs here".to_string()
            } else {
                format!("migration rolled back, the VM runs here: {error}")
            }
        }
        EventKind::MigrationInDoubt { error, .. } => format!(
            "migration in doubt, the VM is kept stopped here until `ferry ctl shutdown`: {error}"
        ),
        EventKind::MigrationInterrupted { error, .. } => format!(
            "post-copy interrupted, the VM runs nowhere; its stopped copy is kept here until `ferry ctl shutdown`: {error}"
        ),
        EventKind::MigrationReceived { from, .. } => format!(
            "VM received by live migration from {}",
            from.as_deref().unwrap_or("?")
        ),
        EventKind::EventsLost { count } => format!("{count} events lost"),
    }
}

fn cause_name(c: api::events::Cause) -> &'static str {
    match c {
        api::events::Cause::Operator => "by the operator",
        api::events::Cause::Snapshot => "for a snapshot",
        api::events::Cause::Migration => "by the migration",
        api::events::Cause::Lease => "by the post-copy lease",
    }
}
