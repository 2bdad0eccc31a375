//! Post-copy across a broken link, on the source: reconnect to the same
//! destination (the gate authenticates the new connection again), name
//! the migration (Reattach), and learn which pages the destination holds
//! (Reattached); the rest of the set is then sent again. Attempts back off
//! from 100 ms to 2 s and stop at the recovery timeout.

use std::io::{self, BufReader, BufWriter};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wire::{Message, MessageReader, MessageWriter, Offer, Reattach, Secret, WireError};

use super::connect::connect;
use super::engine::Engine;
use super::incoming::Incoming;
use super::meter::{Meter, WRITE_SLICE};
use crate::bitmap::{DirtyBitmap, PageLayout};
use crate::error::MigrateError;
use crate::vm::SourceVm;

/// First and longest pause between reconnection attempts.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the destination answered a Reattach.
pub(super) enum Back<T> {
    /// It goes on from the pages it holds.
    Link(T),
    /// It already owns the VM for good (it heard the final grant): there
    /// is nothing left to do.
    Owned,
}

/// How to reach the destination again.
pub(super) struct Redial {
    pub(super) to: String,
    pub(super) secret: Secret,
    pub(super) offer: Offer,
    pub(super) connect_timeout: Duration,
    /// How long from the failure reconnection may take (zero: never try).
    pub(super) recovery: Duration,
    /// Mutual TLS, as on the first connection.
    pub(super) tls: Option<tls::Credentials>,
}

impl Redial {
    /// Reaching `to` the way the options reached it the first time.
    pub(super) fn new(to: &str, opts: &super::SourceOptions) -> Redial {
        Redial {
            to: to.to_string(),
            secret: opts.secret.clone(),
            offer: opts.offer.clone(),
            connect_timeout: opts.connect_timeout,
            recovery: opts.recovery_timeout,
            tls: opts.tls.clone(),
        }
    }
}

impl<V: SourceVm> Engine<'_, V> {
    /// The post-copy link failed with `first`: reconnect within the
    /// recovery timeout and return the pages the destination holds (or
    /// that it owns the VM already). Any other error, or a destination
    /// that refuses the reconnection, ends it.
    pub(super) fn redial(
        &mut self,
        first: MigrateError,
    ) -> Result<Back<DirtyBitmap>, MigrateError> {
        let recovery = match &self.redial {
            Some(r) if first.is_link_failure() && !r.recovery.is_zero() => r.recovery,
            _ => return Err(first),
        };
        // The cause is in the final error if the link never comes back.
        tracing::debug!("post-copy link lost: {first}");
        tracing::warn!(
            "post-copy link lost; reconnecting for up to {}",
            units::format_duration(recovery)
        );
        let deadline = Instant::now() + recovery;
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.reattach() {
                Ok(held) => {
                    tracing::info!("reconnected to the destination: post-copy goes on");
                    return Ok(held);
                }
                Err(e @ (MigrateError::PeerAborted { .. } | MigrateError::Protocol(_))) => {
                    return Err(e);
                }
                Err(e) => tracing::debug!("reconnection failed: {e}"),
            }
            if Instant::now() + backoff >= deadline {
                return Err(MigrateError::NotRecovered {
                    first: Box::new(first),
                    timeout: recovery,
                });
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One attempt: connect, authenticate, Reattach, read Reattached; on
    /// success the new link replaces the old one.
    fn reattach(&mut self) -> Result<Back<DirtyBitmap>, MigrateError> {
        let rd = self.redial.as_ref().expect("redial checked by the caller");
        let Back::Link(link) = dial_again(rd, &self.dial(), &self.layout)? else {
            return Ok(Back::Owned);
        };
        self.bytes_before += self.w.get_ref().get_ref().bytes();
        self.w = link.w;
        self.incoming = link.incoming;
        for (old, _) in &self.links {
            let _ = old.shutdown(std::net::Shutdown::Both);
        }
        self.links.push((link.stream, link.reader));
        Ok(Back::Link(link.held))
    }

    fn dial(&self) -> Dial {
        Dial {
            id: self.migration_id,
            stall: self.stall,
            link_bandwidth: self.link_bandwidth,
            progress: Arc::clone(&self.progress),
            cancel: self.cancel.clone(),
        }
    }
}

/// What a reconnection needs besides the address: the migration's id and
/// the link's settings.
pub(super) struct Dial {
    pub(super) id: u64,
    pub(super) stall: Duration,
    pub(super) link_bandwidth: Option<units::Bandwidth>,
    pub(super) progress: Arc<crate::progress::Progress>,
    pub(super) cancel: crate::progress::CancelToken,
}

/// A link to the destination opened again for a post-copy, and the pages
/// the destination said it holds.
pub(super) struct NewLink {
    pub(super) w: super::engine::Writer,
    pub(super) incoming: Incoming,
    pub(super) stream: tls::Conn,
    pub(super) reader: std::thread::JoinHandle<u64>,
    pub(super) held: DirtyBitmap,
}

/// Connects, authenticates, names migration `d.id` (Reattach) and reads
/// which pages of `layout` the destination holds (Reattached), or that it
/// owns the VM already (Owned).
pub(super) fn dial_again(
    rd: &Redial,
    d: &Dial,
    layout: &Arc<PageLayout>,
) -> Result<Back<NewLink>, MigrateError> {
    let stream = connect(&rd.to, rd.connect_timeout, rd.tls.as_ref())?;
    let io = |e: io::Error| MigrateError::Wire(WireError::Io(e));
    stream.set_nodelay(true).map_err(io)?;
    stream.set_write_timeout(Some(d.stall)).map_err(io)?;
    stream.set_read_timeout(Some(d.stall)).map_err(io)?;
    let mut r = MessageReader::new(BufReader::new(stream.try_clone().map_err(io)?));
    let meter = Meter::new(
        stream.try_clone().map_err(io)?,
        d.link_bandwidth,
        Arc::clone(&d.progress),
        d.stall,
    );
    let mut w = MessageWriter::new(BufWriter::with_capacity(WRITE_SLICE, meter));
    let wire = |during| {
        let stall = d.stall;
        move |e| MigrateError::from_wire(e, during, stall)
    };
    wire::source_handshake(&mut r, &mut w, &rd.secret, &rd.offer)
        .map_err(wire("authenticating again"))?;
    w.reattach(&Reattach { migration_id: d.id })
        .and_then(|()| w.flush())
        .map_err(wire("reattaching"))?;
    let held = match r
        .next("waiting for Reattached")
        .map_err(wire("reattaching"))?
    {
        Message::Reattached(b) => {
            let mut held = DirtyBitmap::new(layout);
            if b.bitmap.len() != held.words().len() * 8 {
                return Err(MigrateError::Protocol(format!(
                    "Reattached names {} bytes of pages, the VM's page bitmap has {}",
                    b.bitmap.len(),
                    held.words().len() * 8
                )));
            }
            for (w, b) in held.words_mut().iter_mut().zip(b.bitmap.chunks_exact(8)) {
                *w = u64::from_le_bytes(b.try_into().expect("8 bytes"));
            }
            held
        }
        Message::Owned { migration_id } if migration_id == d.id => return Ok(Back::Owned),
        m => return Err(MigrateError::unexpected(m, "Reattached")),
    };
    stream.set_read_timeout(None).map_err(io)?;
    let (incoming, reader) =
        Incoming::spawn(r, d.stall, d.cancel.clone(), layout.pages()).map_err(io)?;
    Ok(Back::Link(NewLink {
        w,
        incoming,
        stream,
        reader,
        held,
    }))
}

/// The engine's later links, closed and counted at the end.
pub(super) type Links = Vec<(tls::Conn, std::thread::JoinHandle<u64>)>;
