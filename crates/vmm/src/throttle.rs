//! vCPU throttling, for auto-converge: the vCPUs are kept out of the guest
//! for a share of every period, so a guest that dirties memory faster than
//! a migration can send it slows down.
//!
//! QEMU's scheme (`cpu-throttle`): with throttle `f`, a timer fires every
//! `TIMESLICE / (1 - f)` and kicks every vCPU out of KVM_RUN; each vCPU
//! then stays out for `f / (1 - f)` times the time it ran since its last
//! time out (`TIMESLICE` when the timer is punctual, never more) before
//! entering the guest again, so it runs about `1 - f` of the time, also on
//! a loaded host where wake-ups come late.
//! Kicks are the signal that pauses use (immediate_exit), so this works on
//! any KVM, nested or not. A vCPU out of the guest sleeps on the VM's
//! condition variable: pause, stop and a lower throttle wake it at once.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::vcpu::{Shared, Want};

/// The running share of every throttle period.
pub const TIMESLICE: Duration = Duration::from_millis(10);
/// The largest throttle (QEMU's `max-cpu-throttle` bound).
pub const MAX_THROTTLE: f64 = 0.99;

/// The throttle shared by the VMM, its timer and the vCPU threads.
#[derive(Default)]
pub struct Throttle {
    /// Share of time out of the guest, in millionths.
    ppm: AtomicU32,
    /// Periods started by the timer; a vCPU that sees it change stays out.
    epoch: AtomicU64,
    timer: Mutex<Timer>,
    timer_cv: Condvar,
}

#[derive(Default)]
struct Timer {
    running: bool,
    stop: bool,
}

impl Throttle {
    /// The share of time the vCPUs are kept out of the guest.
    pub fn fraction(&self) -> f64 {
        f64::from(self.ppm.load(Ordering::SeqCst)) / 1e6
    }

    /// Sets the share; returns true if the timer thread must be started.
    pub(crate) fn set(&self, fraction: f64) -> bool {
        self.ppm
            .store((fraction * 1e6).round() as u32, Ordering::SeqCst);
        let mut t = self.timer.lock().unwrap();
        self.timer_cv.notify_all();
        let start = fraction > 0.0 && !t.running && !t.stop;
        t.running |= start;
        start
    }

    /// Stops the timer thread for good.
    pub(crate) fn shut_down(&self) {
        self.timer.lock().unwrap().stop = true;
        self.timer_cv.notify_all();
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
}

/// The timer: while throttled, starts a period and kicks every vCPU; ends
/// with the VM.
pub(crate) fn timer_loop(shared: Arc<Shared>) {
    let t = &shared.throttle;
    let mut g = t.timer.lock().unwrap();
    loop {
        let ended = shared.ctl.lock().unwrap().exit.is_some();
        if g.stop || ended {
            g.running = false;
            return;
        }
        let f = t.fraction();
        if f <= 0.0 {
            g = t.timer_cv.wait(g).unwrap();
            continue;
        }
        g = t
            .timer_cv
            .wait_timeout(g, TIMESLICE.div_f64(1.0 - f))
            .unwrap()
            .0;
        if g.stop || t.fraction() <= 0.0 {
            continue;
        }
        if shared.ctl.lock().unwrap().want == Want::Run {
            t.epoch.fetch_add(1, Ordering::SeqCst);
            shared.kick_all();
        }
    }
}

/// One vCPU thread's view of the throttle.
pub(crate) struct VcpuThrottle {
    /// The last period this vCPU acted on.
    seen: u64,
    /// When it last entered the guest after time out.
    since: Instant,
}

impl VcpuThrottle {
    pub fn new(t: &Throttle) -> Self {
        VcpuThrottle {
            seen: t.epoch(),
            since: Instant::now(),
        }
    }

    /// Called by the vCPU thread out of KVM_RUN: if a period started since
    /// it last looked, it stays out of the guest `f / (1 - f)` times as
    /// long as it ran since its last time out, at most `TIMESLICE` (so a
    /// late wake-up does not eat into the next run), or until the VM must
    /// pause or the throttle is lowered. Ticks during that time are
    /// absorbed: a vCPU always runs between two times out.
    pub fn stay_out(&mut self, shared: &Shared) {
        let t = &shared.throttle;
        if t.epoch() == self.seen {
            return;
        }
        let f = t.fraction();
        if f > 0.0 {
            let ran = self.since.elapsed().min(TIMESLICE);
            let deadline = Instant::now() + ran.mul_f64(f / (1.0 - f));
            let mut c = shared.ctl.lock().unwrap();
            while c.want == Want::Run && t.fraction() >= f {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                c = shared.cv.wait_timeout(c, deadline - now).unwrap().0;
            }
        }
        self.seen = t.epoch();
        self.since = Instant::now();
    }
}
