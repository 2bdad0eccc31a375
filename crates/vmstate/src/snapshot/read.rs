//! Reading a snapshot: every record checked in order (Header, Config,
//! Pages/ZeroPages..., State, End) and handed to a [`SnapshotSink`].

use std::io::{BufReader, Read};

use super::{IO_BUFFER, SnapshotStats};
use crate::error::{DecodeError, SinkError};
use crate::frame::{Frame, FrameReader, Kinds};
use crate::record::{PAGE_SIZE, Record, kind};
use crate::state::{VmConfig, VmState};

/// Receives what a snapshot stream carries, in stream order. Any method
/// may refuse with an error, which ends decoding with
/// [`DecodeError::Refused`].
pub trait SnapshotSink {
    /// The machine's config, validated and within limits; called before
    /// any page so the destination can allocate memory.
    fn config(&mut self, config: &VmConfig) -> Result<(), SinkError>;
    /// Page data for `[gpa, gpa + data.len())`, inside one region of the config.
    fn pages(&mut self, gpa: u64, data: &[u8]) -> Result<(), SinkError>;
    /// `count` pages at `gpa` are zero, inside one region of the config.
    fn zero_pages(&mut self, gpa: u64, count: u64) -> Result<(), SinkError>;
}

/// What a reader accepts beyond the format's own checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// A Config announcing more guest memory than this is refused.
    pub max_memory_bytes: u64,
}

impl Default for ReadLimits {
    /// 1 TiB: a guard against absurd streams; destinations pass their own.
    fn default() -> Self {
        ReadLimits {
            max_memory_bytes: 1 << 40,
        }
    }
}

/// Reads a whole snapshot from `r` (buffered internally) into `sink` with
/// default [`ReadLimits`]; returns the VM state from the State record and what
/// the stream held. Fails on anything after the End record.
pub fn read_snapshot<R: Read, S: SnapshotSink + ?Sized>(
    r: R,
    sink: &mut S,
) -> Result<(VmState, SnapshotStats), DecodeError> {
    read_snapshot_with_limits(r, sink, &ReadLimits::default())
}

/// [`read_snapshot`] with explicit limits.
pub fn read_snapshot_with_limits<R: Read, S: SnapshotSink + ?Sized>(
    r: R,
    sink: &mut S,
    limits: &ReadLimits,
) -> Result<(VmState, SnapshotStats), DecodeError> {
    let mut fr = FrameReader::new(
        BufReader::with_capacity(IO_BUFFER, r),
        Kinds::state_records(),
    );
    let out = read_snapshot_frames(&mut fr, sink, limits)?;
    let frame = fr.frames_read();
    let mut probe = [0u8; 1];
    loop {
        match fr.get_mut().read(&mut probe) {
            Ok(0) => return Ok(out),
            Ok(_) => return Err(DecodeError::TrailingData { frame }),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => return Err(DecodeError::Io { frame, source }),
        }
    }
}

/// Reads one snapshot's records from a frame reader and stops right after
/// its End record, so a protocol can go on using the same reader. The
/// reader must accept the state record kinds.
pub fn read_snapshot_frames<R: Read, S: SnapshotSink + ?Sized>(
    fr: &mut FrameReader<R>,
    sink: &mut S,
    limits: &ReadLimits,
) -> Result<(VmState, SnapshotStats), DecodeError> {
    let mut reading = Reading {
        start_bytes: fr.bytes_read(),
        first_index: fr.frames_read(),
        fr,
        sink,
        pages: 0,
        zero_pages: 0,
    };
    reading.header()?;
    let config = reading.config(limits)?;
    let state = reading.memory_and_state(&config)?;
    let stats = reading.end()?;
    Ok((state, stats))
}

/// One snapshot being read: where it started, and what it carried so far.
struct Reading<'f, R, S: ?Sized> {
    fr: &'f mut FrameReader<R>,
    sink: &'f mut S,
    start_bytes: u64,
    first_index: u64,
    pages: u64,
    zero_pages: u64,
}

impl<R: Read, S: SnapshotSink + ?Sized> Reading<'_, R, S> {
    /// The Header record. A stream whose first frame is not one is not Ferry's.
    fn header(&mut self) -> Result<(), DecodeError> {
        let first_index = self.first_index;
        let not_ferry = || DecodeError::NotFerry("it does not start with a Header record".into());
        let frame = match self.fr.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => return Err(DecodeError::MissingEnd { frame: first_index }),
            Err(
                DecodeError::UnknownKind { .. }
                | DecodeError::Reserved { .. }
                | DecodeError::Oversize { .. },
            ) if first_index == 0 => return Err(not_ferry()),
            Err(e) => return Err(e),
        };
        if frame.kind.kind != kind::HEADER {
            return Err(if first_index == 0 {
                not_ferry()
            } else {
                unexpected(&frame, "header")
            });
        }
        Record::parse(&frame)?;
        Ok(())
    }

    /// The Config record: valid, within `limits`, and accepted by the sink.
    fn config(&mut self, limits: &ReadLimits) -> Result<VmConfig, DecodeError> {
        let frame = next_or_missing(self.fr)?;
        let Record::Config(config) = expect(&frame, kind::CONFIG, "config")? else {
            unreachable!("expect returned a config record")
        };
        config
            .validate()
            .map_err(|source| DecodeError::InvalidConfig {
                frame: frame.index,
                source,
            })?;
        if config.memory_bytes > limits.max_memory_bytes {
            return Err(DecodeError::TooMuchMemory {
                frame: frame.index,
                announced: config.memory_bytes,
                max: limits.max_memory_bytes,
            });
        }
        self.sink
            .config(&config)
            .map_err(|source| DecodeError::Refused {
                frame: frame.index,
                kind: frame.kind,
                source,
            })?;
        Ok(config)
    }

    /// Pages and ZeroPages records into the sink, up to the State record.
    fn memory_and_state(&mut self, config: &VmConfig) -> Result<VmState, DecodeError> {
        loop {
            let frame = next_or_missing(self.fr)?;
            let refused = |source| DecodeError::Refused {
                frame: frame.index,
                kind: frame.kind,
                source,
            };
            let outside = |gpa, len| DecodeError::OutsideMemory {
                frame: frame.index,
                kind: frame.kind,
                gpa,
                len,
            };
            match frame.kind.kind {
                kind::PAGES | kind::ZERO_PAGES | kind::STATE => {}
                _ => return Err(unexpected(&frame, "pages, zero pages or state")),
            }
            match Record::parse(&frame)? {
                Record::Pages { gpa, data } => {
                    if !config.contains_range(gpa, data.len() as u64) {
                        return Err(outside(gpa, data.len() as u64));
                    }
                    self.sink.pages(gpa, data).map_err(refused)?;
                    self.pages += (data.len() / PAGE_SIZE) as u64;
                }
                Record::ZeroPages(runs) => {
                    for (gpa, count) in runs {
                        let len = count * PAGE_SIZE as u64; // parse checked overflow
                        if !config.contains_range(gpa, len) {
                            return Err(outside(gpa, len));
                        }
                        self.sink.zero_pages(gpa, count).map_err(refused)?;
                        self.zero_pages += count;
                    }
                }
                Record::State(state) => {
                    check_state(&frame, &state, config)?;
                    return Ok(*state);
                }
                _ => unreachable!("kind checked above"),
            }
        }
    }

    /// The End record, whose totals must match what the stream carried.
    fn end(&mut self) -> Result<SnapshotStats, DecodeError> {
        let frame = next_or_missing(self.fr)?;
        let Record::End(totals) = expect(&frame, kind::END, "end")? else {
            unreachable!("expect returned an end record")
        };
        let records = frame.index - self.first_index;
        for (what, announced, seen) in [
            ("records", totals.records, records),
            ("pages", totals.pages, self.pages),
            ("zero pages", totals.zero_pages, self.zero_pages),
        ] {
            if announced != seen {
                return Err(DecodeError::TotalsMismatch {
                    frame: frame.index,
                    what,
                    announced,
                    seen,
                });
            }
        }
        Ok(SnapshotStats {
            frames: records + 1,
            pages: self.pages,
            zero_pages: self.zero_pages,
            bytes: self.fr.bytes_read() - self.start_bytes,
        })
    }
}

/// The State record must describe the machine the Config announced.
fn check_state(frame: &Frame<'_>, state: &VmState, config: &VmConfig) -> Result<(), DecodeError> {
    if state.config != *config {
        return Err(malformed(
            frame,
            "the state's config differs from the Config record",
        ));
    }
    if state.vcpus.len() != config.vcpus as usize {
        return Err(malformed(
            frame,
            &format!(
                "{} vCPU states for {} vCPUs",
                state.vcpus.len(),
                config.vcpus
            ),
        ));
    }
    Ok(())
}

fn next_or_missing<R: Read>(fr: &mut FrameReader<R>) -> Result<Frame<'_>, DecodeError> {
    let frame = fr.frames_read();
    fr.next_frame()?.ok_or(DecodeError::MissingEnd { frame })
}

fn expect<'a>(frame: &Frame<'a>, want: u8, name: &'static str) -> Result<Record<'a>, DecodeError> {
    if frame.kind.kind != want {
        return Err(unexpected(frame, name));
    }
    Record::parse(frame)
}

fn unexpected(frame: &Frame<'_>, expected: &'static str) -> DecodeError {
    DecodeError::Unexpected {
        frame: frame.index,
        kind: frame.kind,
        expected,
    }
}

fn malformed(frame: &Frame<'_>, what: &str) -> DecodeError {
    DecodeError::Malformed {
        frame: frame.index,
        kind: frame.kind,
        what: what.to_string(),
    }
}
