//! The guest-visible downtime of a QEMU migration, measured as Ferry's:
//! `guest::sampler` reads the guest's pass counters in both QEMU processes
//! (`process_vm_readv` at the address HMP `gpa2hva` gives), or in their RAM
//! files when they were started with [`crate::QemuConfig::shared_ram`].
//! QEMU restores the guest's TSC on the destination, so only a host-side
//! sampler sees the pause.

use std::time::Duration;

use guest::sampler::{GuestDowntime, MappedFile, ProcessMemory, Sampler, StatusSource};

use crate::error::Error;
use crate::qemu::Qemu;

/// How long before the source's pause and after the destination's resume
/// the sampler looks.
pub const MARGIN: Duration = Duration::from_secs(1);

/// A sampler following one QEMU migration.
pub(crate) struct Probe(Sampler);

/// Where the sampler reads `q`'s guest status page.
fn status_source(q: &mut Qemu) -> Result<Box<dyn StatusSource>, Error> {
    if let Some(f) = q.ram_file() {
        let m = MappedFile::open(f).map_err(Error::io(format!("mapping {}", f.display())))?;
        return Ok(Box::new(m));
    }
    let hva = q.gpa_to_hva(guest::status::GPA)?;
    Ok(Box::new(ProcessMemory::new(q.pid(), hva)))
}

impl Probe {
    /// Starts sampling both QEMUs' guests (the source's must run a Ferry
    /// guest program that published its status page).
    pub fn start(source: &mut Qemu) -> Result<Probe, Error> {
        let sampler = Sampler::start(status_source(source)?)
            .map_err(|e| Error::Config(format!("cannot sample the source guest: {e}")))?;
        Ok(Probe(sampler))
    }

    /// Starts reading the destination's guest too. For a post-copy, only
    /// once the destination is `postcopy-active`: QEMU 7.2 drops a page and
    /// only then registers it with userfaultfd, and a read in between
    /// makes it present, after which installing its content fails and the
    /// migration pauses.
    pub fn attach(&self, destination: &mut Qemu) -> Result<(), Error> {
        self.0.attach_destination(status_source(destination)?);
        Ok(())
    }

    /// After the migration: for a completed one, waits until the guest ran
    /// [`MARGIN`] on the destination (at most `timeout`) and measures.
    pub fn finish(self, completed: bool, timeout: Duration) -> Option<GuestDowntime> {
        if !completed {
            self.0.finish(Duration::ZERO, Duration::ZERO);
            return None;
        }
        let rec = self.0.finish(MARGIN, timeout);
        rec.guest_downtime(MARGIN.as_nanos() as u64).ok()
    }
}
