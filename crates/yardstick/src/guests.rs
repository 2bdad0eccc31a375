//! Ferry's own guest programs (`dirtier`, `idle`, `kvstore` from the
//! `guest` crate) under QEMU: image files, configuration, and serial line
//! times refined from the heartbeats' TSC values.

use std::sync::Arc;

use crate::error::Error;
use crate::qemu::{ImageFile, QemuConfig, StampFnFactory, host_tsc_hz};
use crate::serial::{SerialLine, StampFn};

/// A QEMU configuration for one of Ferry's guests, with the image file it
/// points to (keep this value alive while QEMU runs).
#[derive(Debug)]
pub struct GuestSetup {
    /// Ready to pass to [`crate::Qemu::spawn`] or
    /// [`crate::migrate_guest`]; adjust memory and vCPUs as needed.
    pub config: QemuConfig,
    /// The guest image written to a temporary file.
    pub image: ImageFile,
}

/// Prepares guest program `name` with command line `append`: writes its
/// image to a temporary file and sets up the TSC-based serial stamper.
pub fn guest_config(name: &str, append: &str) -> Result<GuestSetup, Error> {
    let bytes = guest::image(name).ok_or_else(|| {
        Error::Config(format!(
            "unknown guest program {name:?} (known: {})",
            guest::NAMES.join(", ")
        ))
    })?;
    let image = ImageFile::new(&format!("{name}.elf"), bytes)?;
    let mut config = QemuConfig::new(image.path());
    config.append = append.to_string();
    let tsc_khz = host_tsc_hz(&config.binary)? / 1000;
    config.stamper = Some(guest_stamper(tsc_khz));
    Ok(GuestSetup { config, image })
}

/// A stamper factory placing each guest line in host time from the TSC in
/// the guests' heartbeats.
///
/// On these machines the guest's TSC is the host's (kvm-pvm does not offset
/// it, and both QEMUs of a migration run on one host), so a heartbeat's TSC
/// converts directly to host time: the stamper reads the host TSC when a
/// batch arrives and appends it to the batch as a synthetic last heartbeat
/// for `guest::stamp::stamp`. Every line then gets the time it was printed,
/// independent of how the guest's batches and our reads were cut. Should a
/// converted time fall after its arrival or more than
/// [`MAX_BUFFERING_S`] before it (a virtualized, offset TSC), the batch is
/// stamped relative to its own last heartbeat instead, as
/// `guest::stamp::stamp` does by itself.
pub fn guest_stamper(tsc_khz: u64) -> StampFnFactory {
    Arc::new(move || -> StampFn {
        Box::new(move |batch: &[String], arrival: f64| {
            let host_tsc = read_tsc();
            let mut lines: Vec<guest::output::Line> =
                batch.iter().map(|l| guest::output::parse_line(l)).collect();
            if let Some(tsc) = host_tsc {
                lines.push(guest::output::Line::Heartbeat {
                    seq: 0,
                    tsc,
                    rate: 0,
                });
                let mut times = guest::stamp::stamp(&lines, arrival, tsc_khz);
                times.pop();
                lines.pop();
                let plausible = lines.iter().zip(&times).all(|(l, t)| {
                    l.tsc().is_none() || (*t <= arrival + 1e-3 && *t >= arrival - MAX_BUFFERING_S)
                });
                if plausible {
                    return times;
                }
            }
            guest::stamp::stamp(&lines, arrival, tsc_khz)
        })
    })
}

/// Longest time a line may plausibly sit in the guest's buffer and the
/// serial path before it reaches us (seconds).
pub const MAX_BUFFERING_S: f64 = 2.0;

#[cfg(target_arch = "x86_64")]
fn read_tsc() -> Option<u64> {
    // SAFETY: RDTSC has no preconditions on x86-64.
    #[allow(unused_unsafe)]
    Some(unsafe { core::arch::x86_64::_rdtsc() })
}

#[cfg(not(target_arch = "x86_64"))]
fn read_tsc() -> Option<u64> {
    None
}

/// `Some(true)` for a `VERIFY ok` line, `Some(false)` for `VERIFY FAIL`,
/// `None` for other lines.
pub fn verify_result(line: &SerialLine) -> Option<bool> {
    match guest::output::parse_line(&line.text) {
        guest::output::Line::Verify { ok, .. } => Some(ok),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamper_maps_tsc_to_host_time() {
        let khz = 1_000_000; // pretend 1 GHz
        let mut s = guest_stamper(khz)();
        let now = read_tsc().unwrap();
        // Printed 5 ms and 1 ms ago (in TSC terms), arriving now.
        let batch = vec![
            format!("HB seq=1 tsc={} rate=0", now - 5_000_000),
            "VERIFY ok pages=3 gen=1".to_string(),
            format!("HB seq=2 tsc={} rate=0", now - 1_000_000),
        ];
        let t = s(&batch, 100.0);
        assert!(t[0] < t[2] && t[2] <= 100.0, "{t:?}");
        assert!((t[2] - t[0] - 0.004).abs() < 1e-9, "{t:?}");
        assert_eq!(
            t[1], t[2],
            "a line without TSC takes the next heartbeat's time"
        );

        // A TSC far from the host's (offset, virtualized): fall back to
        // times relative to the batch's last heartbeat.
        let batch = vec![
            "HB seq=1 tsc=1000000000 rate=0".to_string(),
            "HB seq=2 tsc=1500000000 rate=0".to_string(),
        ];
        let t = s(&batch, 100.0);
        assert!(
            (t[0] - 99.5).abs() < 1e-9 && (t[1] - 100.0).abs() < 1e-9,
            "{t:?}"
        );
    }

    #[test]
    fn unknown_guest_is_refused() {
        let err = guest_config("nope", "").unwrap_err();
        assert!(err.to_string().contains("\"nope\""), "{err}");
    }

    #[test]
    fn verify_lines() {
        let l = |t: &str| SerialLine {
            arrival: 0.0,
            time: 0.0,
            text: t.into(),
        };
        assert_eq!(verify_result(&l("VERIFY ok pages=3 gen=1")), Some(true));
        assert_eq!(verify_result(&l("HB seq=1 tsc=5 rate=0")), None);
    }
}
