//! Writing a snapshot: Header and Config first, pages as they come, State
//! and End last.

use std::io::{BufWriter, Write};

use super::{IO_BUFFER, SnapshotStats};
use crate::error::EncodeError;
use crate::frame::FrameWriter;
use crate::record::{self, MAX_PAGES_PER_RECORD, MAX_ZERO_RUNS_PER_RECORD, PAGE_SIZE, Totals};
use crate::state::{VmConfig, VmState};
use crate::zero::is_zero_page;

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
