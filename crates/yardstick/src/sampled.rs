//! The guest-visible downtime of a QEMU migration, measured as Ferry's:
//! `guest::sampler` reads the guest's pass counters in both QEMUs' RAM
//! files ([`crate::QemuConfig::shared_ram`]). QEMU restores the guest's
//! TSC on the destination, so only a host-side sampler sees the pause.

use std::time::Duration;

use guest::sampler::{GuestDowntime, MappedFile, Sampler};

use crate::error::Error;
use crate::qemu::Qemu;

/// How long before the source's pause and after the destination's resume
/// the sampler looks.
pub const MARGIN: Duration = Duration::from_secs(1);

/// A sampler following one QEMU migration.
pub(crate) struct Probe(Sampler);

impl Probe {
    /// Starts sampling both QEMUs' guest RAM; `None` unless both were
    /// started with shared RAM.
    pub fn start(source: &Qemu, destination: &Qemu) -> Result<Option<Probe>, Error> {
        let (Some(src), Some(dst)) = (source.ram_file(), destination.ram_file()) else {
            return Ok(None);
        };
        let map = |f| MappedFile::open(f).map_err(Error::io(format!("mapping {}", f.display())));
        let sampler = Sampler::start(Box::new(map(src)?))
            .map_err(|e| Error::Config(format!("cannot sample the source guest: {e}")))?;
        sampler.attach_destination(Box::new(map(dst)?));
        Ok(Some(Probe(sampler)))
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
