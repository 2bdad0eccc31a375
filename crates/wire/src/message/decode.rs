//! Decoding a verified frame into a [`Message`], checking every length.

use vmstate::VmConfig;
use vmstate::frame::Frame;
use vmstate::record::{self, Record};

use super::{
    Accept, Capabilities, Drain, HELLO_MAGIC, Hello, LeaseGrant, LeaseRequest, MAX_CONFIG_LEN,
    MAX_TEXT, Message, NONCE_LEN, PageRequest, PostcopyBegin, PostcopyDone, PostcopyEnd, Reattach,
    Reattached, Resumed, RoundBegin, RoundEnd, Stale, Start, TxnAck, TxnBegin, TxnEnd, TxnPlan,
    Welcome, kind,
};
use crate::abort::{Abort, AbortCode};
use crate::error::WireError;

impl<'a> Message<'a> {
    /// Decodes a verified frame.
    pub fn decode(frame: &Frame<'a>) -> Result<Message<'a>, WireError> {
        let k = frame.kind.kind;
        if k < record::kind::PROTOCOL_MIN {
            return decode_record(frame);
        }
        let name = frame.kind.name.unwrap_or("unknown message");
        if frame.flags != 0 {
            return Err(WireError::Malformed {
                kind: name,
                what: format!("unknown flags {:#04x}", frame.flags),
            });
        }
        let mut c = Cursor {
            p: frame.payload,
            kind: name,
        };
        let msg = match k {
            // Later versions may append fields to these two: no end check.
            kind::HELLO => return decode_hello(&mut c).map(Message::Hello),
            kind::VERSION_REFUSED => return decode_version_refused(&mut c),
            kind::WELCOME => Message::Welcome(decode_welcome(&mut c)?),
            kind::AUTH_PROOF => Message::AuthProof(c.array()?),
            kind::AUTH_OK => Message::AuthOk,
            kind::START => Message::Start(Box::new(decode_start(&mut c)?)),
            kind::ACCEPT => Message::Accept(Accept { flags: c.u64()? }),
            kind::ROUND_BEGIN => Message::RoundBegin(RoundBegin {
                round: c.u32()?,
                flags: c.u32()?,
                pages: c.u64()?,
            }),
            kind::ROUND_END => Message::RoundEnd(decode_round_end(&mut c)?),
            kind::READY => Message::Ready,
            kind::COMMIT => Message::Commit {
                migration_id: c.u64()?,
            },
            kind::OWNED => Message::Owned {
                migration_id: c.u64()?,
            },
            kind::RESUMED => Message::Resumed(Resumed {
                commit_to_resume_ns: c.u64()?,
                resumed_unix_ns: c.u64()?,
            }),
            kind::ABORT => Message::Abort(decode_abort(&mut c)?),
            kind::POSTCOPY_BEGIN => Message::PostcopyBegin(decode_postcopy_begin(&mut c)?),
            kind::PAGE_REQUEST => Message::PageRequest(decode_page_request(&mut c)?),
            kind::POSTCOPY_END => Message::PostcopyEnd(PostcopyEnd {
                pages: c.u64()?,
                zero_pages: c.u64()?,
            }),
            kind::POSTCOPY_DONE => Message::PostcopyDone(PostcopyDone {
                pages: c.u64()?,
                faults: c.u64()?,
                fault_p50_ns: c.u64()?,
                fault_p99_ns: c.u64()?,
            }),
            kind::LEASE_REQUEST => Message::LeaseRequest(LeaseRequest { seq: c.u64()? }),
            kind::LEASE_GRANT => Message::LeaseGrant(decode_lease_grant(&mut c)?),
            kind::REATTACH => Message::Reattach(Reattach {
                migration_id: c.u64()?,
            }),
            kind::DRAIN => Message::Drain(Drain { seq: c.u64()? }),
            kind::DRAINED => Message::Drained(Drain { seq: c.u64()? }),
            kind::STALE => {
                let (pages, bitmap) = decode_bitmap(&mut c)?;
                Message::Stale(Stale { pages, bitmap })
            }
            kind::REATTACHED => {
                let (pages, bitmap) = decode_bitmap(&mut c)?;
                Message::Reattached(Reattached { pages, bitmap })
            }
            kind::TXN_PLAN => Message::TxnPlan(TxnPlan {
                interval_ns: c.nonzero("interval")?,
            }),
            kind::TXN_BEGIN => Message::TxnBegin(TxnBegin {
                seq: c.nonzero("transaction number")?,
            }),
            kind::TXN_END => Message::TxnEnd(TxnEnd {
                seq: c.nonzero("transaction number")?,
                pages: c.u64()?,
                zero_pages: c.u64()?,
            }),
            kind::TXN_ACK => Message::TxnAck(TxnAck {
                seq: c.nonzero("transaction number")?,
            }),
            _ => {
                return Err(WireError::Malformed {
                    kind: name,
                    what: format!("kind {k:#04x} is not a message of this protocol version"),
                });
            }
        };
        c.end()?;
        Ok(msg)
    }
}

/// The vmstate records the protocol carries: Pages, ZeroPages and State.
fn decode_record<'a>(frame: &Frame<'a>) -> Result<Message<'a>, WireError> {
    Ok(match Record::parse(frame)? {
        Record::Pages { gpa, data } => Message::Pages { gpa, data },
        Record::ZeroPages(runs) => Message::ZeroPages(runs),
        Record::State(s) => Message::State(s),
        _ => {
            return Err(WireError::Unexpected {
                got: "a snapshot-only record",
                expected: "a migration message",
            });
        }
    })
}

fn decode_hello(c: &mut Cursor<'_>) -> Result<Hello, WireError> {
    let magic = c.take(8)?;
    if magic != HELLO_MAGIC {
        return Err(WireError::NotFerry);
    }
    let min_version = c.u16()?;
    let max_version = c.u16()?;
    let _reserved = c.u32()?;
    let capabilities = Capabilities(c.u64()?);
    let nonce = c.array()?;
    if min_version > max_version {
        return Err(c.malformed(format!(
            "version range {min_version}..={max_version} is empty"
        )));
    }
    Ok(Hello {
        min_version,
        max_version,
        capabilities,
        nonce,
    })
}

fn decode_version_refused<'a>(c: &mut Cursor<'_>) -> Result<Message<'a>, WireError> {
    let min_version = c.u16()?;
    let max_version = c.u16()?;
    // Any text after the range is informational and ignored.
    Ok(Message::VersionRefused {
        min_version,
        max_version,
    })
}

fn decode_welcome(c: &mut Cursor<'_>) -> Result<Welcome, WireError> {
    let version = c.u16()?;
    let _reserved = c.take(6)?;
    Ok(Welcome {
        version,
        capabilities: Capabilities(c.u64()?),
        nonce: c.array()?,
        proof: c.array()?,
    })
}

fn decode_start(c: &mut Cursor<'_>) -> Result<Start, WireError> {
    let migration_id = c.u64()?;
    let page_size = c.u32()?;
    let flags = c.u32()?;
    let cbor = std::mem::take(&mut c.p);
    if cbor.len() > MAX_CONFIG_LEN {
        return Err(c.malformed(format!(
            "config of {} bytes exceeds {MAX_CONFIG_LEN}",
            cbor.len()
        )));
    }
    let mut rest = cbor;
    let config: VmConfig = ciborium::from_reader(&mut rest)
        .map_err(|e| c.malformed(format!("invalid CBOR config: {e}")))?;
    if !rest.is_empty() {
        return Err(c.malformed(format!("{} bytes after the config", rest.len())));
    }
    Ok(Start {
        migration_id,
        page_size,
        flags,
        config,
    })
}

fn decode_round_end(c: &mut Cursor<'_>) -> Result<RoundEnd, WireError> {
    let round = c.u32()?;
    let _reserved = c.u32()?;
    Ok(RoundEnd {
        round,
        pages: c.u64()?,
        zero_pages: c.u64()?,
    })
}

fn decode_postcopy_begin<'a>(c: &mut Cursor<'a>) -> Result<PostcopyBegin<'a>, WireError> {
    let pages = c.u64()?;
    let lease_ns = c.u64()?;
    let (_, bitmap) = decode_bitmap_of(c, pages)?;
    Ok(PostcopyBegin {
        pages,
        lease_ns,
        bitmap,
    })
}

/// A page count, then the bitmap it counts (the rest of the payload).
fn decode_bitmap<'a>(c: &mut Cursor<'a>) -> Result<(u64, &'a [u8]), WireError> {
    let pages = c.u64()?;
    decode_bitmap_of(c, pages)
}

fn decode_bitmap_of<'a>(c: &mut Cursor<'a>, pages: u64) -> Result<(u64, &'a [u8]), WireError> {
    let bitmap = std::mem::take(&mut c.p);
    if !bitmap.len().is_multiple_of(8) {
        return Err(c.malformed(format!(
            "bitmap of {} bytes is not whole 64-bit words",
            bitmap.len()
        )));
    }
    let set: u64 = bitmap.iter().map(|b| u64::from(b.count_ones())).sum();
    if set != pages {
        return Err(c.malformed(format!("announces {pages} pages but its bitmap has {set}")));
    }
    Ok((pages, bitmap))
}

fn decode_lease_grant(c: &mut Cursor<'_>) -> Result<LeaseGrant, WireError> {
    let seq = c.u64()?;
    let flags = c.u32()?;
    let _reserved = c.u32()?;
    if flags & !LeaseGrant::KNOWN_FLAGS != 0 {
        return Err(c.malformed(format!("unknown flags {flags:#x}")));
    }
    if seq == 0 && flags & LeaseGrant::FINAL == 0 {
        return Err(c.malformed("answers request 0, which is never sent".into()));
    }
    Ok(LeaseGrant { seq, flags })
}

fn decode_page_request(c: &mut Cursor<'_>) -> Result<PageRequest, WireError> {
    let gpa = c.u64()?;
    let pages = c.u32()?;
    let _reserved = c.u32()?;
    if pages == 0 || pages > PageRequest::MAX_PAGES {
        return Err(c.malformed(format!(
            "asks for {pages} pages (1 to {} allowed)",
            PageRequest::MAX_PAGES
        )));
    }
    if gpa % vmstate::record::PAGE_SIZE as u64 != 0 {
        return Err(c.malformed(format!("address {gpa:#x} is not page aligned")));
    }
    Ok(PageRequest { gpa, pages })
}

fn decode_abort(c: &mut Cursor<'_>) -> Result<Abort, WireError> {
    let code = AbortCode::from_u16(c.u16()?);
    let _reserved = c.u16()?;
    let message = c.text()?;
    Ok(Abort { code, message })
}

/// Little-endian cursor over a payload; every read checks the length.
struct Cursor<'a> {
    p: &'a [u8],
    kind: &'static str,
}

impl<'a> Cursor<'a> {
    fn malformed(&self, what: String) -> WireError {
        WireError::Malformed {
            kind: self.kind,
            what,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.p.len() < n {
            return Err(WireError::Malformed {
                kind: self.kind,
                what: format!("payload too short ({} bytes left, need {n})", self.p.len()),
            });
        }
        let (a, b) = self.p.split_at(n);
        self.p = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    /// A u64 that must not be zero.
    fn nonzero(&mut self, what: &str) -> Result<u64, WireError> {
        match self.u64()? {
            0 => Err(self.malformed(format!("{what} 0 is never sent"))),
            v => Ok(v),
        }
    }
    fn array(&mut self) -> Result<[u8; NONCE_LEN], WireError> {
        Ok(self.take(NONCE_LEN)?.try_into().expect("32"))
    }
    /// The payload must be fully consumed.
    fn end(&self) -> Result<(), WireError> {
        if self.p.is_empty() {
            Ok(())
        } else {
            Err(WireError::Malformed {
                kind: self.kind,
                what: format!("{} unexpected trailing bytes", self.p.len()),
            })
        }
    }
    fn text(&mut self) -> Result<String, WireError> {
        let rest = std::mem::take(&mut self.p);
        if rest.len() > MAX_TEXT {
            return Err(WireError::Malformed {
                kind: self.kind,
                what: format!("text of {} bytes exceeds {MAX_TEXT}", rest.len()),
            });
        }
        String::from_utf8(rest.to_vec()).map_err(|_| WireError::Malformed {
            kind: self.kind,
            what: "text is not UTF-8".into(),
        })
    }
}
