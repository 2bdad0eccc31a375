//! State records carried in frames (kinds 0x01-0x3f): what each payload
//! holds, how it is written, and how a verified frame is parsed back.

use std::io::Write;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{DecodeError, EncodeError, FrameKind};
use crate::frame::{Frame, FrameWriter, Kinds};
use crate::state::{STATE_VERSION, VmConfig, VmState};

/// Record kinds. 0x00 is never valid; 0x07-0x3f are reserved for future
/// state records; 0x40-0xff belong to the migration protocol.
pub mod kind {
    pub const HEADER: u8 = 0x01;
    pub const CONFIG: u8 = 0x02;
    pub const PAGES: u8 = 0x03;
    pub const ZERO_PAGES: u8 = 0x04;
    pub const STATE: u8 = 0x05;
    pub const END: u8 = 0x06;
    /// Highest kind reserved for state records.
    pub const STATE_MAX: u8 = 0x3f;
    /// First kind free for the migration protocol.
    pub const PROTOCOL_MIN: u8 = 0x40;
}

const RECORD_KINDS: &[(u8, &str)] = &[
    (kind::HEADER, "header"),
    (kind::CONFIG, "config"),
    (kind::PAGES, "pages"),
    (kind::ZERO_PAGES, "zero pages"),
    (kind::STATE, "state"),
    (kind::END, "end"),
];

impl Kinds {
    /// The state record kinds of this crate (0x01-0x06), with their names.
    pub fn state_records() -> Self {
        RECORD_KINDS
            .iter()
            .fold(Kinds::empty(), |k, &(kind, name)| k.with(kind, name))
    }
}

/// Name of a state record kind, for messages.
fn describe_kind(k: u8) -> FrameKind {
    FrameKind {
        kind: k,
        name: RECORD_KINDS.iter().find(|(x, _)| *x == k).map(|(_, n)| *n),
    }
}

/// Writes one record frame; an oversize payload is reported with the
/// record's name (the frame layer knows only the number).
fn write_record<W: Write>(
    fw: &mut FrameWriter<W>,
    kind: u8,
    parts: &[&[u8]],
) -> Result<(), EncodeError> {
    fw.write_frame(kind, 0, parts).map_err(|e| match e {
        EncodeError::PayloadTooLarge { len, max, .. } => EncodeError::PayloadTooLarge {
            kind: describe_kind(kind),
            len,
            max,
        },
        e => e,
    })
}

/// First bytes of every Header record.
pub const MAGIC: [u8; 8] = *b"FERRYVM\0";
/// Version of the frame and record layout. Readers refuse any other.
pub const FORMAT_VERSION: u32 = 1;
/// Guest page size the encoding works in.
pub const PAGE_SIZE: usize = 4096;
/// Most pages one Pages record carries (1 MiB of data).
pub const MAX_PAGES_PER_RECORD: usize = 256;
/// Most (gpa, count) runs one ZeroPages record carries (1 MiB payload).
pub const MAX_ZERO_RUNS_PER_RECORD: usize = 65536;

const HEADER_LEN: usize = 16;
const ZERO_RUN_LEN: usize = 16;
const END_LEN: usize = 24;
/// Scratch buffer for CBOR byte strings: must hold the largest kvm struct
/// serialized as bytes (kvm_xsave, 4 KiB).
const CBOR_SCRATCH: usize = 16 << 10;

/// Counts the End record announces, so a reader detects lost records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Pages carried as data (sum over Pages records).
    pub pages: u64,
    /// Pages announced zero (sum over ZeroPages runs).
    pub zero_pages: u64,
    /// Records before End, Header included (= End's frame index).
    pub records: u64,
}

/// A parsed state record. `Pages` borrows its data from the frame.
#[derive(Debug)]
pub enum Record<'a> {
    Header {
        format_version: u32,
        state_version: u32,
    },
    Config(VmConfig),
    Pages {
        gpa: u64,
        data: &'a [u8],
    },
    ZeroPages(ZeroRuns<'a>),
    State(Box<VmState>),
    End(Totals),
}

/// The (gpa, page count) runs of a ZeroPages record, decoded lazily.
#[derive(Clone, Debug)]
pub struct ZeroRuns<'a> {
    payload: &'a [u8],
}

impl<'a> ZeroRuns<'a> {
    pub fn len(&self) -> usize {
        self.payload.len() / ZERO_RUN_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// Total pages over all runs.
    pub fn pages(&self) -> u64 {
        self.clone().map(|(_, n)| n).sum()
    }
}

impl Iterator for ZeroRuns<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let (run, rest) = self.payload.split_first_chunk::<ZERO_RUN_LEN>()?;
        self.payload = rest;
        let gpa = u64::from_le_bytes(run[..8].try_into().expect("8 bytes"));
        let count = u64::from_le_bytes(run[8..].try_into().expect("8 bytes"));
        Some((gpa, count))
    }
}

impl<'a> Record<'a> {
    /// Parses and checks a verified frame of a state record kind: version
    /// numbers, payload shape, page alignment and counts, CBOR validity.
    /// Checks against guest memory layout are the caller's (it knows the config).
    pub fn parse(frame: &Frame<'a>) -> Result<Record<'a>, DecodeError> {
        let p = frame.payload;
        let malformed = |what: String| DecodeError::Malformed {
            frame: frame.index,
            kind: frame.kind,
            what,
        };
        if frame.flags != 0 {
            return Err(DecodeError::Flags {
                frame: frame.index,
                kind: frame.kind,
                flags: frame.flags,
            });
        }
        match frame.kind.kind {
            kind::HEADER => parse_header(p, malformed),
            kind::CONFIG => Ok(Record::Config(decode_cbor(p).map_err(malformed)?)),
            kind::STATE => {
                let state: VmState = decode_cbor(p).map_err(malformed)?;
                if state.version != STATE_VERSION {
                    return Err(DecodeError::UnsupportedStateVersion {
                        found: state.version,
                        supported: STATE_VERSION,
                    });
                }
                Ok(Record::State(Box::new(state)))
            }
            kind::PAGES => parse_pages(p).map_err(malformed),
            kind::ZERO_PAGES => parse_zero_pages(p).map_err(malformed),
            kind::END => parse_end(p).map_err(malformed),
            _ => Err(DecodeError::Unexpected {
                frame: frame.index,
                kind: frame.kind,
                expected: "a state record",
            }),
        }
    }
}

/// Checks the Header's magic and versions; `malformed` names the frame.
fn parse_header<'a>(
    p: &[u8],
    malformed: impl Fn(String) -> DecodeError,
) -> Result<Record<'a>, DecodeError> {
    if p.len() < MAGIC.len() || p[..MAGIC.len()] != MAGIC {
        return Err(DecodeError::NotFerry(
            "the Header record has the wrong magic".into(),
        ));
    }
    if p.len() < 12 {
        return Err(malformed(format!("header of {} bytes", p.len())));
    }
    let format_version = u32::from_le_bytes(p[8..12].try_into().expect("4 bytes"));
    if format_version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: format_version,
            supported: FORMAT_VERSION,
        });
    }
    if p.len() != HEADER_LEN {
        return Err(malformed(format!(
            "header of {} bytes, expected {HEADER_LEN}",
            p.len()
        )));
    }
    let state_version = u32::from_le_bytes(p[12..16].try_into().expect("4 bytes"));
    if state_version != STATE_VERSION {
        return Err(DecodeError::UnsupportedStateVersion {
            found: state_version,
            supported: STATE_VERSION,
        });
    }
    Ok(Record::Header {
        format_version,
        state_version,
    })
}

fn parse_pages(p: &[u8]) -> Result<Record<'_>, String> {
    let Some((gpa, data)) = p.split_first_chunk::<8>() else {
        return Err(format!("{} bytes, no room for the address", p.len()));
    };
    let gpa = u64::from_le_bytes(*gpa);
    if gpa % PAGE_SIZE as u64 != 0 {
        return Err(format!("address {gpa:#x} is not page aligned"));
    }
    if data.is_empty()
        || data.len() % PAGE_SIZE != 0
        || data.len() > MAX_PAGES_PER_RECORD * PAGE_SIZE
    {
        return Err(format!(
            "{} data bytes is not 1 to {MAX_PAGES_PER_RECORD} whole pages",
            data.len()
        ));
    }
    if gpa.checked_add(data.len() as u64).is_none() {
        return Err(format!("pages at {gpa:#x} wrap around"));
    }
    Ok(Record::Pages { gpa, data })
}

fn parse_zero_pages(p: &[u8]) -> Result<Record<'_>, String> {
    if p.is_empty()
        || !p.len().is_multiple_of(ZERO_RUN_LEN)
        || p.len() > MAX_ZERO_RUNS_PER_RECORD * ZERO_RUN_LEN
    {
        return Err(format!(
            "{} bytes is not 1 to {MAX_ZERO_RUNS_PER_RECORD} runs of {ZERO_RUN_LEN} bytes",
            p.len()
        ));
    }
    let runs = ZeroRuns { payload: p };
    for (gpa, count) in runs.clone() {
        if gpa % PAGE_SIZE as u64 != 0 || count == 0 {
            return Err(format!(
                "zero run at {gpa:#x} of {count} pages is empty or not page aligned"
            ));
        }
        if count
            .checked_mul(PAGE_SIZE as u64)
            .and_then(|len| gpa.checked_add(len))
            .is_none()
        {
            return Err(format!(
                "zero run at {gpa:#x} of {count} pages wraps around"
            ));
        }
    }
    Ok(Record::ZeroPages(runs))
}

fn parse_end<'a>(p: &[u8]) -> Result<Record<'a>, String> {
    if p.len() != END_LEN {
        return Err(format!("{} bytes, expected {END_LEN}", p.len()));
    }
    let word = |i: usize| u64::from_le_bytes(p[i * 8..i * 8 + 8].try_into().expect("8"));
    Ok(Record::End(Totals {
        pages: word(0),
        zero_pages: word(1),
        records: word(2),
    }))
}

fn decode_cbor<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    let mut rest = payload;
    let mut scratch = vec![0u8; CBOR_SCRATCH];
    let value = ciborium::de::from_reader_with_buffer(&mut rest, &mut scratch)
        .map_err(|e| format!("invalid CBOR: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the CBOR value", rest.len()));
    }
    Ok(value)
}

fn encode_cbor<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(1024);
    ciborium::into_writer(value, &mut out).map_err(|e| EncodeError::Cbor {
        what,
        msg: e.to_string(),
    })?;
    Ok(out)
}

/// Writes the Header record (magic, [`FORMAT_VERSION`], [`STATE_VERSION`]).
pub fn write_header<W: Write>(fw: &mut FrameWriter<W>) -> Result<(), EncodeError> {
    let mut p = [0u8; HEADER_LEN];
    p[..8].copy_from_slice(&MAGIC);
    p[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    p[12..16].copy_from_slice(&STATE_VERSION.to_le_bytes());
    write_record(fw, kind::HEADER, &[&p])
}

/// Writes the Config record (CBOR). The config is validated first.
pub fn write_config<W: Write>(
    fw: &mut FrameWriter<W>,
    config: &VmConfig,
) -> Result<(), EncodeError> {
    config.validate()?;
    let cbor = encode_cbor(config, "VM config")?;
    write_record(fw, kind::CONFIG, &[&cbor])
}

/// Writes one Pages record: `data` is 1 to [`MAX_PAGES_PER_RECORD`] whole
/// pages starting at the page-aligned `gpa`, written without a copy.
pub fn write_pages<W: Write>(
    fw: &mut FrameWriter<W>,
    gpa: u64,
    data: &[u8],
) -> Result<(), EncodeError> {
    check_run(gpa, data.len() as u64)?;
    if data.len() > MAX_PAGES_PER_RECORD * PAGE_SIZE {
        return Err(EncodeError::TooMany {
            what: "pages",
            len: (data.len() / PAGE_SIZE) as u64,
            max: MAX_PAGES_PER_RECORD as u64,
        });
    }
    write_record(fw, kind::PAGES, &[&gpa.to_le_bytes(), data])
}

/// Writes one ZeroPages record of 1 to [`MAX_ZERO_RUNS_PER_RECORD`]
/// (gpa, page count) runs.
pub fn write_zero_pages<W: Write>(
    fw: &mut FrameWriter<W>,
    runs: &[(u64, u64)],
) -> Result<(), EncodeError> {
    if runs.is_empty() || runs.len() > MAX_ZERO_RUNS_PER_RECORD {
        return Err(EncodeError::TooMany {
            what: "zero page runs",
            len: runs.len() as u64,
            max: MAX_ZERO_RUNS_PER_RECORD as u64,
        });
    }
    let mut p = Vec::with_capacity(runs.len() * ZERO_RUN_LEN);
    for &(gpa, count) in runs {
        let len = count.saturating_mul(PAGE_SIZE as u64);
        check_run(gpa, len)?;
        p.extend_from_slice(&gpa.to_le_bytes());
        p.extend_from_slice(&count.to_le_bytes());
    }
    write_record(fw, kind::ZERO_PAGES, &[&p])
}

/// Writes the State record (CBOR). Refuses a state whose `version` is not
/// [`STATE_VERSION`].
pub fn write_state<W: Write>(fw: &mut FrameWriter<W>, state: &VmState) -> Result<(), EncodeError> {
    if state.version != STATE_VERSION {
        return Err(EncodeError::StateVersion {
            found: state.version,
            supported: STATE_VERSION,
        });
    }
    let cbor = encode_cbor(state, "VM state")?;
    write_record(fw, kind::STATE, &[&cbor])
}

/// Writes the End record.
pub fn write_end<W: Write>(fw: &mut FrameWriter<W>, totals: &Totals) -> Result<(), EncodeError> {
    let mut p = [0u8; END_LEN];
    p[..8].copy_from_slice(&totals.pages.to_le_bytes());
    p[8..16].copy_from_slice(&totals.zero_pages.to_le_bytes());
    p[16..].copy_from_slice(&totals.records.to_le_bytes());
    write_record(fw, kind::END, &[&p])
}

fn check_run(gpa: u64, len: u64) -> Result<(), EncodeError> {
    let page = PAGE_SIZE as u64;
    if !gpa.is_multiple_of(page)
        || len == 0
        || !len.is_multiple_of(page)
        || gpa.checked_add(len).is_none()
    {
        return Err(EncodeError::Unaligned { gpa, len });
    }
    Ok(())
}
