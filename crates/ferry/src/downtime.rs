//! The guest-visible downtime of one migration between two Ferry processes
//! on this host: `guest::sampler` reads the guest's pass counters in both
//! processes (`process_vm_readv`), which their control APIs locate.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use api::Client;
use api::routes;
use api::types::VmStatus;
use guest::sampler::{ProcessMemory, Sampler};
use migrate::{MigrationReport, Outcome};

/// How long before the source's pause and after the destination's resume
/// the sampler looks (the window).
pub const MARGIN: Duration = Duration::from_secs(1);
/// How long to wait for the guest to run on the destination.
const RESUME_TIMEOUT: Duration = Duration::from_secs(30);

fn vm_status(client: &Client) -> anyhow::Result<VmStatus> {
    Ok(serde_json::from_value(client.get_ok(routes::VM)?)?)
}

/// A sampler following one migration: started before it, finished after.
pub struct DowntimeProbe {
    sampler: Sampler,
    stop: Arc<AtomicBool>,
    finder: Option<JoinHandle<()>>,
}

impl DowntimeProbe {
    /// Starts sampling the guest of the `source` API's process, and looks
    /// for the destination's status page through the API socket
    /// `destination` until its memory exists (the migration's start).
    pub fn start(source: &Client, destination: &Path) -> anyhow::Result<DowntimeProbe> {
        let st = vm_status(source).context("the source's status")?;
        let addr = st
            .status_page_addr
            .context("the source's API gives no status page address")?;
        let sampler = Sampler::start(Box::new(ProcessMemory::new(st.pid, addr)))
            .context("cannot sample the source guest")?;
        let attacher = sampler.attacher();
        let stop = Arc::new(AtomicBool::new(false));
        let dst = Client::new(destination).with_timeout(Duration::from_secs(2));
        let finder = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("downtime-finder".into())
                .spawn(move || {
                    // Prompt even on a busy host: the destination must be
                    // found before the source pauses.
                    guest::sampler::realtime_priority();
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(s) = vm_status(&dst)
                            && let Some(addr) = s.status_page_addr
                        {
                            attacher.attach_destination(Box::new(ProcessMemory::new(s.pid, addr)));
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })?
        };
        Ok(DowntimeProbe {
            sampler,
            stop,
            finder: Some(finder),
        })
    }

    /// After the migration: once the guest ran [`MARGIN`] on the
    /// destination, fills in the report's `guest_downtime_us` and
    /// companions. A migration that did not complete leaves them absent;
    /// so does one the sampler could not follow (said on stderr).
    pub fn finish(mut self, report: &mut MigrationReport) {
        let completed = report.outcome == Outcome::Completed;
        let rec = if completed {
            self.sampler.finish(MARGIN, RESUME_TIMEOUT)
        } else {
            self.sampler.finish(Duration::ZERO, Duration::ZERO)
        };
        self.stop.store(true, Ordering::Relaxed);
        if let Some(f) = self.finder.take() {
            let _ = f.join();
        }
        if !completed {
            return;
        }
        match rec.guest_downtime(MARGIN.as_nanos() as u64) {
            Ok(d) => report.guest = (&d).into(),
            Err(e) => eprintln!("ferry: no guest-visible downtime: {e}"),
        }
    }
}
