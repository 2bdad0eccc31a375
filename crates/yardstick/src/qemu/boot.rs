//! Boot time: from spawning QEMU to the guest's first heartbeat.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Qemu, QemuConfig};
use crate::error::Error;

/// Boot time of one QEMU run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootTime {
    /// From spawning QEMU to the arrival of the first serial line, in ms.
    pub first_line_ms: f64,
    /// From spawning QEMU to the first heartbeat line, in ms: when the
    /// guest printed it ([`crate::SerialLine::time`], refined by the
    /// config's stamper), which can precede the first line's arrival.
    pub first_heartbeat_ms: f64,
}

/// Spawns QEMU for `config`, waits for the first heartbeat, stops QEMU, and
/// returns the times from spawn (just before `fork`) to the first line's
/// arrival and to the first heartbeat.
pub fn measure_boot(config: &QemuConfig, timeout: Duration) -> Result<BootTime, Error> {
    let mut q = Qemu::spawn(config)?;
    let hb = q.wait_for_heartbeat(timeout)?;
    let first = q.serial().lines().first().map_or(hb.arrival, |l| l.arrival);
    let t0 = q.spawned_at();
    q.kill();
    Ok(BootTime {
        first_line_ms: (first - t0) * 1e3,
        first_heartbeat_ms: (hb.time - t0) * 1e3,
    })
}
