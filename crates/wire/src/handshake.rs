//! Version negotiation and mutual authentication, run once at the start of
//! every connection (docs/PROTOCOL.md, "Handshake").

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::abort::AbortCode;
use crate::auth::{Secret, Transcript, nonce};
use crate::error::WireError;
use crate::message::{Capabilities, Hello, Message, MessageReader, MessageWriter, Welcome};

/// Protocol version this implementation speaks best. Version 2 adds
/// post-copy (capability [`Capabilities::POSTCOPY`], messages 0x50-0x53,
/// the flags of Accept); version 1 peers are still served, without it.
pub const PROTOCOL_VERSION: u16 = 2;
/// Oldest protocol version this implementation still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// What a side offers in the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub min_version: u16,
    pub max_version: u16,
    pub capabilities: Capabilities,
}

impl Default for Offer {
    fn default() -> Self {
        Offer {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            capabilities: Capabilities::SUPPORTED,
        }
    }
}

/// The outcome of a successful handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub version: u16,
    pub capabilities: Capabilities,
    /// Round-trip time of Hello -> Welcome, measured by the source (zero on the destination).
    pub rtt: Duration,
}

/// Source side: Hello, check the destination's proof, send ours.
pub fn source_handshake<R: Read, W: Write>(
    r: &mut MessageReader<R>,
    w: &mut MessageWriter<W>,
    secret: &Secret,
    offer: &Offer,
) -> Result<Session, WireError> {
    let source_nonce = nonce();
    w.hello(&Hello {
        min_version: offer.min_version,
        max_version: offer.max_version,
        capabilities: offer.capabilities,
        nonce: source_nonce,
    })?;
    w.flush()?;
    let sent = Instant::now();
    let welcome: Welcome = match r.next("waiting for the destination's Welcome")? {
        Message::Welcome(welcome) => welcome,
        Message::VersionRefused {
            min_version,
            max_version,
        } => {
            return Err(WireError::VersionMismatch {
                source_min: offer.min_version,
                source_max: offer.max_version,
                dest_min: min_version,
                dest_max: max_version,
            });
        }
        Message::Abort(a) => {
            return Err(WireError::PeerAborted {
                code: a.code,
                message: a.message,
            });
        }
        m => {
            return Err(WireError::Unexpected {
                got: m.name(),
                expected: "Welcome",
            });
        }
    };
    let rtt = sent.elapsed();
    if welcome.version < offer.min_version || welcome.version > offer.max_version {
        let msg = format!(
            "the destination chose version {}, outside the offered {}..={}",
            welcome.version, offer.min_version, offer.max_version
        );
        let _ = w.abort(AbortCode::Version, &msg);
        let _ = w.flush();
        return Err(WireError::Malformed {
            kind: "Welcome",
            what: msg,
        });
    }
    if !offer.capabilities.contains(welcome.capabilities) {
        let msg = format!(
            "the destination enabled capabilities {:#x} that were not offered ({:#x})",
            welcome.capabilities.0, offer.capabilities.0
        );
        let _ = w.abort(AbortCode::Protocol, &msg);
        let _ = w.flush();
        return Err(WireError::Malformed {
            kind: "Welcome",
            what: msg,
        });
    }
    let t = Transcript {
        source_nonce,
        dest_nonce: welcome.nonce,
        version: welcome.version,
        capabilities: welcome.capabilities,
    };
    if !secret.verify_dest(&t, &welcome.proof) {
        let _ = w.abort(
            AbortCode::AuthFailed,
            "the destination's proof does not match the source's migration secret",
        );
        let _ = w.flush();
        return Err(WireError::AuthFailed(
            "the destination does not hold the same migration secret".into(),
        ));
    }
    w.auth_proof(&secret.source_proof(&t))?;
    w.flush()?;
    match r.next("waiting for the destination to accept our proof")? {
        Message::AuthOk => Ok(Session {
            version: welcome.version,
            capabilities: welcome.capabilities.for_version(welcome.version),
            rtt,
        }),
        Message::Abort(a) if a.code == AbortCode::AuthFailed => Err(WireError::AuthFailed(
            format!("the destination rejected the source's proof: {}", a.message),
        )),
        Message::Abort(a) => Err(WireError::PeerAborted {
            code: a.code,
            message: a.message,
        }),
        m => Err(WireError::Unexpected {
            got: m.name(),
            expected: "AuthOk",
        }),
    }
}

/// The one text a destination sends a peer it refuses before authentication
/// (with [`AbortCode::AuthFailed`]), whatever the reason: an unauthenticated
/// peer learns nothing beyond version negotiation. The destination's own
/// error, and its log, say what was wrong.
pub const REFUSAL: &str = "the destination refused this connection before authentication";

/// Destination side: read Hello, pick a version, prove ourselves, check the
/// source's proof. Reads only handshake messages of bounded size
/// ([`MessageReader::handshake`]) and reads nothing past the AuthProof, so
/// the session can go on over `stream` with its own buffers. Give it a
/// stream with a deadline: it has none of its own.
pub fn dest_handshake<S: Read + Write>(
    stream: &mut S,
    secret: &Secret,
    offer: &Offer,
) -> Result<Session, WireError> {
    let mut r = MessageReader::handshake(stream);
    let hello = match r.next("waiting for the source's Hello") {
        Ok(Message::Hello(h)) => h,
        Ok(Message::Abort(a)) => return Err(peer_aborted(a)),
        Ok(m) => {
            let got = m.name();
            refuse(r.get_mut());
            return Err(WireError::Unexpected {
                got,
                expected: "Hello",
            });
        }
        Err(e) => {
            if e.is_corrupt() {
                refuse(r.get_mut());
            }
            return Err(e);
        }
    };
    let lo = hello.min_version.max(offer.min_version);
    let hi = hello.max_version.min(offer.max_version);
    if lo > hi {
        send(r.get_mut(), |w| {
            w.version_refused(offer.min_version, offer.max_version)
        })?;
        return Err(WireError::VersionMismatch {
            source_min: hello.min_version,
            source_max: hello.max_version,
            dest_min: offer.min_version,
            dest_max: offer.max_version,
        });
    }
    let t = Transcript {
        source_nonce: hello.nonce,
        dest_nonce: nonce(),
        version: hi,
        capabilities: hello
            .capabilities
            .intersect(offer.capabilities)
            .for_version(hi),
    };
    send(r.get_mut(), |w| {
        w.welcome(&Welcome {
            version: t.version,
            capabilities: t.capabilities,
            nonce: t.dest_nonce,
            proof: secret.dest_proof(&t),
        })
    })?;
    let verdict = match r.next("waiting for the source's proof") {
        Ok(Message::AuthProof(proof)) if secret.verify_source(&t, &proof) => Ok(()),
        Ok(Message::AuthProof(_)) => Err(WireError::AuthFailed(
            "the source does not hold the migration secret".into(),
        )),
        Ok(Message::Abort(a)) => return Err(peer_aborted(a)),
        Ok(m) => Err(WireError::Unexpected {
            got: m.name(),
            expected: "AuthProof",
        }),
        Err(e) if e.is_corrupt() => Err(e),
        Err(e) => return Err(e),
    };
    let stream = r.into_inner();
    match verdict {
        Ok(()) => {
            send(stream, |w| w.auth_ok())?;
            Ok(Session {
                version: t.version,
                capabilities: t.capabilities,
                rtt: Duration::ZERO,
            })
        }
        Err(e) => {
            refuse(stream);
            Err(e)
        }
    }
}

/// An Abort from the source during the handshake: it refused us (our proof,
/// our version) or gave up.
fn peer_aborted(a: crate::abort::Abort) -> WireError {
    if a.code == AbortCode::AuthFailed {
        WireError::AuthFailed(format!(
            "the source rejected the destination's proof: {}",
            a.message
        ))
    } else {
        WireError::PeerAborted {
            code: a.code,
            message: a.message,
        }
    }
}

/// Writes one message as a single write (a frame is a few dozen bytes).
fn send<S: Write>(
    stream: &mut S,
    f: impl FnOnce(&mut MessageWriter<&mut Vec<u8>>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut buf = Vec::with_capacity(128);
    f(&mut MessageWriter::new(&mut buf))?;
    stream.write_all(&buf)?;
    stream.flush()?;
    Ok(())
}

/// Tells a refused peer [`REFUSAL`], if it still listens.
fn refuse<S: Write>(stream: &mut S) {
    let _ = send(stream, |w| w.abort(AbortCode::AuthFailed, REFUSAL));
}
