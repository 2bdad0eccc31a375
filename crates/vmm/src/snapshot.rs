//! Whole-VM checkpoint and restore through `vmstate`'s encoding. This is
//! also the non-live (stop-and-copy) baseline.

use std::io::{Read, Write};

use vmstate::{SinkError, SnapshotSink, SnapshotStats, SnapshotWriter, VmConfig};

use crate::Error;
use crate::devices::SerialSink;
use crate::memory::PAGE_SIZE;
use crate::vm::{RunState, Vm};

/// Writes the VM's memory (pages the guest never touched and zero pages
/// are left out) and state to `w`. The VM is paused for the duration and
/// resumed afterwards if it was running.
pub fn save<W: Write>(vm: &Vm, w: W) -> Result<SnapshotStats, Error> {
    let was_running = vm.run_state() == RunState::Running;
    vm.pause()?;
    let result = write_paused(vm, w);
    if was_running {
        vm.resume()?;
    }
    result
}

/// Writes a paused VM to `w`.
pub fn write_paused<W: Write>(vm: &Vm, w: W) -> Result<SnapshotStats, Error> {
    let state = vm.save_state()?;
    let enc = Error::WriteSnapshot;
    let mut sw = SnapshotWriter::new(w, vm.config()).map_err(enc)?;
    let mut words = Vec::new();
    for (region, r) in vm.host_regions().into_iter().enumerate() {
        let pages = (r.len / PAGE_SIZE) as usize;
        words.clear();
        words.resize(pages.div_ceil(64), 0u64);
        vm.data_pages(region, &mut words)?;
        let resident = |i: usize| words[i / 64] & (1 << (i % 64)) != 0;
        let mut i = 0;
        while i < pages {
            if !resident(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < pages && resident(i) {
                i += 1;
            }
            let off = start as u64 * PAGE_SIZE;
            let len = (i - start) as u64 * PAGE_SIZE;
            // SAFETY: the range lies inside the region's mapping and the
            // vCPUs are paused, so nothing writes it while we read.
            let data =
                unsafe { std::slice::from_raw_parts(r.host.add(off as usize), len as usize) };
            sw.memory(r.gpa + off, data).map_err(enc)?;
        }
    }
    Ok(sw.finish(&state).map_err(enc)?.1)
}

/// Builds a VM from a snapshot stream; it comes back paused.
pub fn restore<R: Read>(
    r: R,
    serial: SerialSink,
    limits: &vmstate::ReadLimits,
) -> Result<(Vm, SnapshotStats), Error> {
    let mut sink = RestoreSink {
        serial: Some(serial),
        vm: None,
    };
    let (state, stats) =
        vmstate::read_snapshot_with_limits(r, &mut sink, limits).map_err(Error::ReadSnapshot)?;
    let mut vm = sink.vm.ok_or(Error::SnapshotWithoutConfig)?;
    vm.restore_state(&state)?;
    Ok((vm, stats))
}

/// Receives pages into a VM created from the stream's config.
pub struct RestoreSink {
    serial: Option<SerialSink>,
    pub vm: Option<Vm>,
}

impl RestoreSink {
    pub fn new(serial: SerialSink) -> Self {
        RestoreSink {
            serial: Some(serial),
            vm: None,
        }
    }

    fn vm(&self) -> Result<&Vm, SinkError> {
        self.vm
            .as_ref()
            .ok_or_else(|| "pages before the configuration".into())
    }
}

impl SnapshotSink for RestoreSink {
    fn config(&mut self, config: &VmConfig) -> Result<(), SinkError> {
        let serial = self.serial.take().ok_or("a second configuration record")?;
        self.vm = Some(Vm::for_restore(config, serial)?);
        Ok(())
    }

    fn pages(&mut self, gpa: u64, data: &[u8]) -> Result<(), SinkError> {
        Ok(self.vm()?.write_memory(gpa, data)?)
    }

    fn zero_pages(&mut self, gpa: u64, count: u64) -> Result<(), SinkError> {
        let zero = [0u8; PAGE_SIZE as usize];
        let vm = self.vm()?;
        for i in 0..count {
            vm.write_memory(gpa + i * PAGE_SIZE, &zero)?;
        }
        Ok(())
    }
}
