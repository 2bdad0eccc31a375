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
use crate::bitmap::DirtyBitmap;
use crate::error::MigrateError;
use crate::vm::SourceVm;

/// First and longest pause between reconnection attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

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

impl<V: SourceVm> Engine<'_, V> {
    /// The post-copy link failed with `first`: reconnect within the
    /// recovery timeout and return the pages the destination holds. Any
    /// other error, or a destination that refuses the reconnection, ends it.
    pub(super) fn redial(&mut self, first: MigrateError) -> Result<DirtyBitmap, MigrateError> {
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
    fn reattach(&mut self) -> Result<DirtyBitmap, MigrateError> {
        let rd = self.redial.as_ref().expect("redial checked by the caller");
        let stream = connect(&rd.to, rd.connect_timeout, rd.tls.as_ref())?;
        let io = |e: io::Error| MigrateError::Wire(WireError::Io(e));
        stream.set_nodelay(true).map_err(io)?;
        stream.set_write_timeout(Some(self.stall)).map_err(io)?;
        stream.set_read_timeout(Some(self.stall)).map_err(io)?;
        let mut r = MessageReader::new(BufReader::new(stream.try_clone().map_err(io)?));
        let meter = Meter::new(
            stream.try_clone().map_err(io)?,
            self.link_bandwidth,
            Arc::clone(&self.progress),
            self.stall,
        );
        let mut w = MessageWriter::new(BufWriter::with_capacity(WRITE_SLICE, meter));
        let wire = |during| {
            let stall = self.stall;
            move |e| MigrateError::from_wire(e, during, stall)
        };
        wire::source_handshake(&mut r, &mut w, &rd.secret, &rd.offer)
            .map_err(wire("authenticating again"))?;
        w.reattach(&Reattach {
            migration_id: self.migration_id,
        })
        .and_then(|()| w.flush())
        .map_err(wire("reattaching"))?;
        let held = match r
            .next("waiting for Reattached")
            .map_err(wire("reattaching"))?
        {
            Message::Reattached(b) => {
                let mut held = DirtyBitmap::new(&self.layout);
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
            m => return Err(MigrateError::unexpected(m, "Reattached")),
        };
        stream.set_read_timeout(None).map_err(io)?;
        let (incoming, reader) =
            Incoming::spawn(r, self.stall, self.cancel.clone(), self.layout.pages()).map_err(io)?;
        self.bytes_before += self.w.get_ref().get_ref().bytes();
        self.w = w;
        self.incoming = incoming;
        for (old, _) in &self.links {
            let _ = old.shutdown(std::net::Shutdown::Both);
        }
        self.links.push((stream, reader));
        Ok(held)
    }
}

/// The engine's later links, closed and counted at the end.
pub(super) type Links = Vec<(tls::Conn, std::thread::JoinHandle<u64>)>;
