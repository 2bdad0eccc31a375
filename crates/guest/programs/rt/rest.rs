//! Waiting with nothing to do: with `idle=sleep` the vCPU asks the VMM,
//! through the idle port, to keep it out of the guest for a short slice
//! (the analogue of `hlt` with a timer, which ring 3 cannot use), so its
//! host thread sleeps; with `idle=spin` (the default) it spins.

use super::clock::{now, spin, ticks, tsc_hz};
use super::entry::params;
use super::heartbeat::next_beat;
use super::params::IdleMode;
use super::port::{IDLE_PORT, outl};

/// Longest single rest (the VMM's bound too): callers poll their phase
/// and the verification rounds between rests, and vCPU 0 never rests past
/// its next heartbeat.
const MAX_SLICE_NS: u64 = 1_000_000;
/// Shorter waits spin: a port exit costs about 90 µs here (docs/PLATFORM).
const MIN_SLEEP_NS: u64 = 200_000;

/// Waits until TSC `deadline`, or less, and returns so the caller can
/// poll: with `idle=sleep`, vCPU `cpu` sleeps in the VMM until the
/// deadline, its next heartbeat (vCPU 0) or 10 ms, whichever comes first;
/// with `idle=spin`, or for a wait too short to sleep, it spins once.
pub fn rest_until(cpu: usize, deadline: u64) {
    if params().idle == IdleMode::Spin {
        core::hint::spin_loop();
        return;
    }
    let t = now();
    let mut until = deadline.min(t.saturating_add(ticks(MAX_SLICE_NS)));
    if cpu == 0 {
        until = until.min(next_beat());
    }
    let slice = until.saturating_sub(t);
    if slice < ticks(MIN_SLEEP_NS) {
        core::hint::spin_loop();
        return;
    }
    let us = (slice as u128 * 1_000_000 / tsc_hz().max(1) as u128) as u32;
    outl(IDLE_PORT, us);
    // The VMM may wake it early (a pause) or not know the port (QEMU):
    // the slice still ends on time.
    spin(until.saturating_sub(now()));
}
