//! A whole VM as one record stream: Header, Config, Pages/ZeroPages...,
//! State, End. Written to and read from any `io::Write` / `io::Read`.

use std::io::{BufReader, BufWriter, Read, Write};

use crate::error::{DecodeError, EncodeError, SinkError};
use crate::frame::{FrameReader, FrameWriter, Kinds};
use crate::record::{
    self, MAX_PAGES_PER_RECORD, MAX_ZERO_RUNS_PER_RECORD, PAGE_SIZE, Record, Totals, kind,
};
use crate::state::{VmConfig, VmState};
use crate::zero::is_zero_page;

/// Buffer between the encoder and the underlying writer or reader. Page
/// data (up to 1 MiB per record) is larger and bypasses it.
const IO_BUFFER: usize = 128 << 10;

/// What a snapshot stream contained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Frames in the stream, End included.
    pub frames: u64,
    /// Pages carried as data.
    pub pages: u64,
    /// Pages announced zero by ZeroPages records.
    pub zero_pages: u64,
    /// Bytes of the whole stream.
    pub bytes: u64,
}

/// Writes a snapshot incrementally: [`SnapshotWriter::new`] writes Header and
/// Config, then any number of page calls, then [`SnapshotWriter::finish`]
/// writes State and End. Output is buffered; page data is not copied.
pub struct SnapshotWriter<W: Write> {
    fw: FrameWriter<BufWriter<W>>,
    config: VmConfig,
    pages: u64,
    zero_pages: u64,
    zero_runs: Vec<(u64, u64)>,
}

impl<W: Write> SnapshotWriter<W> {
    /// Validates `config` and writes the Header and Config records.
    pub fn new(w: W, config: &VmConfig) -> Result<Self, EncodeError> {
        config.validate()?;
        let mut fw = FrameWriter::new(BufWriter::with_capacity(IO_BUFFER, w));
        record::write_header(&mut fw)?;
        record::write_config(&mut fw, config)?;
        Ok(SnapshotWriter {
            fw,
            config: config.clone(),
            pages: 0,
            zero_pages: 0,
            zero_runs: Vec::new(),
        })
    }

    /// Writes `data` (whole pages at the page-aligned `gpa`, inside guest
    /// memory) as page data, as given: the caller has decided these pages
    /// matter. Split into records of at most [`MAX_PAGES_PER_RECORD`] pages.
    pub fn pages(&mut self, gpa: u64, data: &[u8]) -> Result<(), EncodeError> {
        if data.is_empty() {
            return Ok(());
        }
        self.flush_zero_runs()?;
        for (piece_gpa, piece) in self.pieces(gpa, data)? {
            self.write_run(piece_gpa, piece)?;
        }
        Ok(())
    }

    /// Writes the non-zero pages of `data` (whole pages at `gpa`, inside
    /// guest memory); zero pages are skipped, since a snapshot's destination
    /// starts from zeroed memory. Use this to dump a whole memory region.
    pub fn memory(&mut self, gpa: u64, data: &[u8]) -> Result<(), EncodeError> {
        if data.is_empty() {
            return Ok(());
        }
        self.flush_zero_runs()?;
        for (piece_gpa, piece) in self.pieces(gpa, data)? {
            let mut run_start: Option<usize> = None;
            for (i, page) in piece.chunks_exact(PAGE_SIZE).enumerate() {
                let off = i * PAGE_SIZE;
                if is_zero_page(page) {
                    if let Some(start) = run_start.take() {
                        self.write_run(piece_gpa + start as u64, &piece[start..off])?;
                    }
                } else if run_start.is_none() {
                    run_start = Some(off);
                }
            }
            if let Some(start) = run_start {
                self.write_run(piece_gpa + start as u64, &piece[start..])?;
            }
        }
        Ok(())
    }

    /// Announces `count` pages at `gpa` as zero (for a destination that may
    /// already hold older contents). Adjacent runs are merged and written in
    /// batches, always before any later page data.
    pub fn zero_pages(&mut self, gpa: u64, count: u64) -> Result<(), EncodeError> {
        if count == 0 {
            return Ok(());
        }
        let len = count
            .checked_mul(PAGE_SIZE as u64)
            .ok_or(EncodeError::Unaligned { gpa, len: u64::MAX })?;
        if !gpa.is_multiple_of(PAGE_SIZE as u64) {
            return Err(EncodeError::Unaligned { gpa, len });
        }
        let pieces = self
            .config
            .split_range(gpa, len)
            .ok_or(EncodeError::OutsideMemory { gpa, len })?;
        for (piece_gpa, piece_len) in pieces {
            let n = piece_len / PAGE_SIZE as u64;
            match self.zero_runs.last_mut() {
                Some((g, c)) if *g + *c * PAGE_SIZE as u64 == piece_gpa => *c += n,
                _ => self.zero_runs.push((piece_gpa, n)),
            }
            self.zero_pages += n;
            if self.zero_runs.len() >= MAX_ZERO_RUNS_PER_RECORD {
                self.flush_zero_runs()?;
            }
        }
        Ok(())
    }

    /// Writes the State and End records, flushes, and returns the writer
    /// with what was written. `state.config` must equal the config given to
    /// [`SnapshotWriter::new`].
    pub fn finish(mut self, state: &VmState) -> Result<(W, SnapshotStats), EncodeError> {
        if state.config != self.config {
            return Err(EncodeError::ConfigMismatch);
        }
        self.flush_zero_runs()?;
        record::write_state(&mut self.fw, state)?;
        let totals = Totals {
            pages: self.pages,
            zero_pages: self.zero_pages,
            records: self.fw.frames_written(),
        };
        record::write_end(&mut self.fw, &totals)?;
        self.fw.flush()?;
        let stats = SnapshotStats {
            frames: self.fw.frames_written(),
            pages: self.pages,
            zero_pages: self.zero_pages,
            bytes: self.fw.bytes_written(),
        };
        let w = self
            .fw
            .into_inner()
            .into_inner()
            .map_err(|e| EncodeError::Io(e.into_error()))?;
        Ok((w, stats))
    }

    /// Checks a run's alignment and splits it at region boundaries.
    fn pieces<'d>(&self, gpa: u64, data: &'d [u8]) -> Result<Vec<(u64, &'d [u8])>, EncodeError> {
        let len = data.len() as u64;
        if !gpa.is_multiple_of(PAGE_SIZE as u64) || !len.is_multiple_of(PAGE_SIZE as u64) {
            return Err(EncodeError::Unaligned { gpa, len });
        }
        let ranges = self
            .config
            .split_range(gpa, len)
            .ok_or(EncodeError::OutsideMemory { gpa, len })?;
        Ok(ranges
            .into_iter()
            .map(|(g, l)| {
                let off = (g - gpa) as usize;
                (g, &data[off..off + l as usize])
            })
            .collect())
    }

    /// Writes pages inside one region as records of at most 256 pages.
    fn write_run(&mut self, gpa: u64, data: &[u8]) -> Result<(), EncodeError> {
        for (i, chunk) in data.chunks(MAX_PAGES_PER_RECORD * PAGE_SIZE).enumerate() {
            let at = gpa + (i * MAX_PAGES_PER_RECORD * PAGE_SIZE) as u64;
            record::write_pages(&mut self.fw, at, chunk)?;
            self.pages += (chunk.len() / PAGE_SIZE) as u64;
        }
        Ok(())
    }

    fn flush_zero_runs(&mut self) -> Result<(), EncodeError> {
        if !self.zero_runs.is_empty() {
            record::write_zero_pages(&mut self.fw, &self.zero_runs)?;
            self.zero_runs.clear();
        }
        Ok(())
    }
}

/// Writes a whole snapshot: Header, Config (`state.config`), the given page
/// runs as data (each `(gpa, bytes)`: whole pages inside guest memory; the
/// caller decides which pages are worth writing, see [`crate::is_zero_page`]
/// or [`SnapshotWriter::memory`]), State, End.
pub fn write_snapshot<'a, W, I>(
    w: W,
    state: &VmState,
    runs: I,
) -> Result<SnapshotStats, EncodeError>
where
    W: Write,
    I: IntoIterator<Item = (u64, &'a [u8])>,
{
    let mut sw = SnapshotWriter::new(w, &state.config)?;
    for (gpa, data) in runs {
        sw.pages(gpa, data)?;
    }
    Ok(sw.finish(state)?.1)
}

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
    let start_bytes = fr.bytes_read();
    let first_index = fr.frames_read();
    let not_ferry = || DecodeError::NotFerry("it does not start with a Header record".into());

    // Header.
    let frame = match fr.next_frame() {
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

    // Config.
    let frame = next_or_missing(fr)?;
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
    sink.config(&config)
        .map_err(|source| DecodeError::Refused {
            frame: frame.index,
            kind: frame.kind,
            source,
        })?;

    // Memory, then State.
    let mut pages = 0u64;
    let mut zero_pages = 0u64;
    let state = loop {
        let frame = next_or_missing(fr)?;
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
                sink.pages(gpa, data).map_err(refused)?;
                pages += (data.len() / PAGE_SIZE) as u64;
            }
            Record::ZeroPages(runs) => {
                for (gpa, count) in runs {
                    let len = count * PAGE_SIZE as u64; // parse checked overflow
                    if !config.contains_range(gpa, len) {
                        return Err(outside(gpa, len));
                    }
                    sink.zero_pages(gpa, count).map_err(refused)?;
                    zero_pages += count;
                }
            }
            Record::State(state) => {
                if state.config != config {
                    return Err(malformed(
                        &frame,
                        "the state's config differs from the Config record",
                    ));
                }
                if state.vcpus.len() != config.vcpus as usize {
                    return Err(malformed(
                        &frame,
                        &format!(
                            "{} vCPU states for {} vCPUs",
                            state.vcpus.len(),
                            config.vcpus
                        ),
                    ));
                }
                break state;
            }
            _ => unreachable!("kind checked above"),
        }
    };

    // End.
    let frame = next_or_missing(fr)?;
    let Record::End(totals) = expect(&frame, kind::END, "end")? else {
        unreachable!("expect returned an end record")
    };
    let records = frame.index - first_index;
    for (what, announced, seen) in [
        ("records", totals.records, records),
        ("pages", totals.pages, pages),
        ("zero pages", totals.zero_pages, zero_pages),
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
    let stats = SnapshotStats {
        frames: records + 1,
        pages,
        zero_pages,
        bytes: fr.bytes_read() - start_bytes,
    };
    Ok((*state, stats))
}

fn next_or_missing<R: Read>(
    fr: &mut FrameReader<R>,
) -> Result<crate::frame::Frame<'_>, DecodeError> {
    let frame = fr.frames_read();
    fr.next_frame()?.ok_or(DecodeError::MissingEnd { frame })
}

fn expect<'a>(
    frame: &crate::frame::Frame<'a>,
    want: u8,
    name: &'static str,
) -> Result<Record<'a>, DecodeError> {
    if frame.kind.kind != want {
        return Err(unexpected(frame, name));
    }
    Record::parse(frame)
}

fn unexpected(frame: &crate::frame::Frame<'_>, expected: &'static str) -> DecodeError {
    DecodeError::Unexpected {
        frame: frame.index,
        kind: frame.kind,
        expected,
    }
}

fn malformed(frame: &crate::frame::Frame<'_>, what: &str) -> DecodeError {
    DecodeError::Malformed {
        frame: frame.index,
        kind: frame.kind,
        what: what.to_string(),
    }
}
