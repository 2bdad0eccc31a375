//! Post-copy across a broken link, on the destination: the session keeps
//! its VM (fenced once its lease lapses) and waits, up to the recovery
//! timeout, for the source to come back through the same gate. The new
//! connection authenticates like any other and must then name this
//! migration (Reattach); the destination answers with the pages it holds
//! (Reattached) and post-copy goes on from there.

use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tls::Conn;
use wire::gate::{Admitted, Gate};
use wire::{AbortCode, Message, MessageReader, MessageWriter, PageRequest, Session, WireError};

use super::lease::Lease;
use super::postcopy::Switch;
use super::session::{SharedWriter, lock};
use super::{DestOptions, ReceiveReport};
use crate::error::MigrateError;

/// A new link to the source: its reader and writer.
pub(super) type Link<R, W> = (MessageReader<R>, MessageWriter<W>);

/// A new link over a connection, with a handle on that connection (to cut
/// it should it break in turn).
pub(super) type NewLink = (
    MessageReader<BufReader<Conn>>,
    MessageWriter<BufWriter<Conn>>,
    Conn,
);

/// Waits until a deadline for the source of migration `id` to come back;
/// `None` once the deadline passed.
pub(super) type Relink<'a, R, W> = &'a dyn Fn(Instant, u64) -> Option<Link<R, W>>;

/// The gate's side: authenticated connections until one names migration
/// `id` (others are told so and closed), or `deadline`.
pub(super) fn relink(
    gate: &Gate<Session>,
    opts: &DestOptions,
    deadline: Instant,
    id: u64,
) -> Option<NewLink> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let Some(peer) = gate.next(Some(left)) else {
            continue;
        };
        let who = peer.peer;
        match reattach(peer, opts, id) {
            Ok(link) => return Some(link),
            Err(e) => tracing::warn!(peer = %who, "refused a reconnection: {e}"),
        }
    }
}

/// After a migration that left the VM ours for good (`report.owned`, its
/// final grant heard): for the recovery timeout, on a thread of its own
/// that keeps `gate`, a source that reconnects for it (it did not hear
/// Owned, so it still keeps its copy) is told Owned again; others are
/// refused as by [`relink`]. Otherwise the gate closes now.
pub fn confirm_owned(gate: Gate<Session>, opts: &DestOptions, report: &ReceiveReport) {
    if !report.owned {
        return;
    }
    let (id, opts) = (report.migration_id, opts.clone());
    let until = Instant::now() + opts.recovery_timeout;
    std::thread::spawn(move || tell_owned(&gate, &opts, id, until));
}

/// [`confirm_owned`]'s thread.
fn tell_owned(gate: &Gate<Session>, opts: &DestOptions, id: u64, until: Instant) {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let Some(peer) = gate.next(Some(left)) else {
            continue;
        };
        let who = peer.peer;
        let told = reattach(peer, opts, id).and_then(|(_, mut w, _)| {
            w.owned(id).and_then(|()| w.flush()).map_err(|e| {
                MigrateError::from_wire(e, "confirming the VM is ours", Duration::ZERO)
            })
        });
        match told {
            Ok(()) => {
                tracing::info!(peer = %who, "the source came back: told again that the VM runs here for good")
            }
            Err(e) => tracing::warn!(peer = %who, "refused a reconnection: {e}"),
        }
    }
}

/// Reads the new connection's first message: it must be Reattach for `id`.
fn reattach(peer: Admitted<Session>, opts: &DestOptions, id: u64) -> Result<NewLink, MigrateError> {
    let io = |e| MigrateError::Wire(WireError::Io(e));
    let s = peer.stream;
    s.set_nodelay(true).map_err(io)?;
    s.set_read_timeout(Some(opts.stall_timeout)).map_err(io)?;
    s.set_write_timeout(Some(opts.stall_timeout)).map_err(io)?;
    let mut r = MessageReader::new(BufReader::with_capacity(
        256 * 1024,
        s.try_clone().map_err(io)?,
    ));
    let handle = s.try_clone().map_err(io)?;
    let mut w = MessageWriter::new(BufWriter::new(s));
    const DURING: &str = "waiting for Reattach";
    let why = match r
        .next(DURING)
        .map_err(|e| MigrateError::from_wire(e, DURING, opts.stall_timeout))?
    {
        Message::Reattach(a) if a.migration_id == id => return Ok((r, w, handle)),
        Message::Reattach(a) => format!(
            "no migration {:016x} here (this destination receives {id:016x})",
            a.migration_id
        ),
        m => format!("expected Reattach, got {}", m.name()),
    };
    let _ = w.abort(AbortCode::Protocol, &why).and_then(|()| w.flush());
    Err(MigrateError::Protocol(why))
}

/// The session's side, once `link` named this migration: the new writer
/// replaces the old one (lease requests sent on the old link are void),
/// the source learns which pages are here, and the faults still waiting
/// are asked for again.
pub(super) fn resume_link<R: Read, W: Write>(
    r: &mut MessageReader<R>,
    w: &SharedWriter<W>,
    link: Link<R, W>,
    switch: &Switch,
    lease: Option<&Lease>,
) -> Result<(), MigrateError> {
    let (nr, nw) = link;
    *r = nr;
    let mut w = lock(w);
    *w = nw;
    if let Some(l) = lease {
        l.relinked();
    }
    switch.epoch.fetch_add(1, Ordering::SeqCst);
    let during = "answering Reattach";
    let wire = |e| MigrateError::from_wire(e, during, Duration::ZERO);
    w.reattached(&switch.received_words()).map_err(wire)?;
    for gpa in switch.waiting_gpas() {
        w.page_request(&PageRequest { gpa, pages: 1 })
            .map_err(wire)?;
    }
    w.flush().map_err(wire)
}
