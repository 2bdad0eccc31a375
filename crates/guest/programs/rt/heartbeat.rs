//! vCPU 0's time keeping: progress counters, heartbeat lines paced to the
//! serial budget, flushes, the status page, and the start of verification
//! rounds and of the final one.

use core::fmt::Write;
use core::sync::atomic::Ordering::*;

use super::clock::{now, ticks, tsc_hz};
use super::console::{CONSOLE, FLUSH_AT};
use super::params::Params;
use super::port::serial_write;
use super::status::{pass, status_publish};
use super::verify::{FINAL, verify_collect, verify_start};
use super::{Global, MAX_CPUS, PERCPU0, PerCpu};

/// Work done per vCPU: pages written (dirtier) or operations (kvstore).
static PROGRESS: [PerCpu; MAX_CPUS] = [PERCPU0; MAX_CPUS];

/// Adds `n` units of work done by `cpu`.
#[inline(always)]
pub fn progress(cpu: usize, n: u64) {
    let c = &PROGRESS[cpu].0;
    c.store(c.load(Relaxed) + n, Relaxed);
}

/// Work done by all vCPUs.
pub fn progress_total() -> u64 {
    PROGRESS.iter().map(|c| c.0.load(Relaxed)).sum()
}

/// vCPU 0's schedule (TSC ticks) and the heartbeat rate window.
pub(super) struct Heart {
    seq: u64,
    next: u64,
    interval: u64,
    flush_every: u64,
    last_flush: u64,
    window_start: u64,
    window_work: u64,
    rate: u64,
    deadline: u64,
    verify_every: u64,
    next_verify: u64,
    /// Measured serial cost, TSC ticks per byte (0 = not measured yet).
    byte_cost: u64,
    serial_pct: u64,
}
pub(super) static HEART: Global<Heart> = Global::new(Heart {
    seq: 0,
    next: 0,
    interval: 1,
    flush_every: 0,
    last_flush: 0,
    window_start: 0,
    window_work: 0,
    rate: 0,
    deadline: u64::MAX,
    verify_every: 0,
    next_verify: u64::MAX,
    byte_cost: 0,
    serial_pct: 25,
});

impl Heart {
    /// Takes the intervals from the parameters, once the TSC rate is known;
    /// the run's deadline counts from `t_start`, the guest's entry.
    pub(super) fn configure(&mut self, p: &Params, t_start: u64) {
        self.interval = ticks(p.hb_ns);
        self.flush_every = ticks(p.flush_ns);
        if p.run_ns > 0 {
            self.deadline = t_start + ticks(p.run_ns);
        }
        self.verify_every = ticks(p.verify_ns);
        self.serial_pct = p.serial_pct;
    }

    /// Starts the schedule at `t`, when the program begins to run.
    pub(super) fn start(&mut self, t: u64, p: &Params) {
        self.window_start = t;
        self.next = t + self.interval;
        if p.verify_ns > 0 {
            self.next_verify = t + self.verify_every;
        }
    }

    /// Writes a heartbeat line stamped `t`, updates the status page, flushes when due.
    pub(super) fn beat(&mut self, t: u64, force_flush: bool) {
        let work = progress_total();
        let span = t.saturating_sub(self.window_start);
        if span >= tsc_hz() / 10 {
            self.rate =
                ((work - self.window_work) as u128 * tsc_hz() as u128 / span as u128) as u64;
            self.window_start = t;
            self.window_work = work;
        }
        let c = unsafe { CONSOLE.get() };
        let _ = writeln!(c, "HB seq={} tsc={} rate={}", self.seq, t, self.rate);
        status_publish(self.seq, t, work, self.rate);
        self.seq += 1;
        if force_flush
            || self.seq == 1
            || c.len >= FLUSH_AT
            || t.wrapping_sub(self.last_flush) >= self.flush_every
        {
            let before = now();
            serial_write(&c.buf[..c.len]);
            let after = now();
            if c.len >= 16 {
                let cost = (after - before) / c.len as u64;
                self.byte_cost = if self.byte_cost == 0 {
                    cost
                } else {
                    (3 * self.byte_cost + cost) / 4
                };
            }
            c.len = 0;
            self.last_flush = after;
        }
    }

    /// Time to the next heartbeat: `hb`, or longer if the serial budget needs it.
    fn spacing(&self) -> u64 {
        const LINE: u64 = 40;
        self.interval
            .max(self.byte_cost * LINE * 100 / self.serial_pct)
    }
}

/// When vCPU 0 has its next heartbeat to write (TSC ticks).
pub(super) fn next_beat() -> u64 {
    unsafe { HEART.get() }.next
}

/// One pass of `cpu`'s loop: counted in its status slot (see
/// [`pass`]); on vCPU 0 also the time keeping: heartbeats, flushes,
/// verification rounds, run end. Returns true when a heartbeat was written
/// (a cheap moment for per-second work).
#[inline]
pub fn poll(cpu: usize) -> bool {
    let t = now();
    pass(cpu, t);
    if cpu != 0 {
        return false;
    }
    let h = unsafe { HEART.get() };
    if t < h.next {
        return false;
    }
    tick(h, t);
    true
}

#[inline(never)]
fn tick(h: &mut Heart, t: u64) {
    h.beat(t, false);
    // Never burst to catch up (the TSC jumps by real time after a restore).
    let spacing = h.spacing();
    h.next += spacing;
    if h.next < t {
        h.next = t + spacing;
    }
    verify_collect();
    if t >= h.next_verify && t < h.deadline {
        verify_start();
        h.next_verify = t + h.verify_every;
    }
    if t >= h.deadline && !FINAL.load(Relaxed) {
        FINAL.store(true, Relaxed);
        verify_start();
    }
}
