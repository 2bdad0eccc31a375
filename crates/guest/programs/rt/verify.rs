//! The periodic self-verification: vCPU 0 opens a round, every vCPU checks
//! its own memory and reports, vCPU 0 prints the `VERIFY` line; after the
//! final round the guest exits with the result.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

use super::clock::now;
use super::console::println;
use super::heartbeat::HEART;
use super::port::{EXIT_INTEGRITY, EXIT_OK, exit};
use super::vcpus::nthreads;
use super::{Global, MAX_CPUS, PERCPU0, PerCpu, pattern};

/// One vCPU's result of a verification round.
#[derive(Clone, Copy)]
pub struct VerifyResult {
    /// Pages of memory checked.
    pub pages: u64,
    /// Keys checked (kvstore), else 0.
    pub keys: u64,
    /// Highest generation seen.
    pub max_gen: u64,
    /// Blocks that failed.
    pub fails: u64,
    /// First failure: what failed ("page"/"key"), index, expected and found.
    pub first: Option<(&'static str, u64, u64, pattern::Found)>,
}

impl VerifyResult {
    pub const EMPTY: VerifyResult = VerifyResult {
        pages: 0,
        keys: 0,
        max_gen: 0,
        fails: 0,
        first: None,
    };

    /// Records the outcome of checking one block.
    pub fn record(
        &mut self,
        kind: &'static str,
        index: u64,
        generation: u32,
        r: Result<(), pattern::Found>,
    ) {
        self.max_gen = self.max_gen.max(u64::from(generation));
        if let Err(found) = r {
            self.fails += 1;
            if self.first.is_none() {
                self.first = Some((kind, index, u64::from(generation), found));
            }
        }
    }

    /// Adds another vCPU's result to a round's total.
    fn add(&mut self, v: &VerifyResult) {
        self.pages += v.pages;
        self.keys += v.keys;
        self.max_gen = self.max_gen.max(v.max_gen);
        self.fails += v.fails;
        if self.first.is_none() {
            self.first = v.first;
        }
    }
}

/// Round requested by vCPU 0 (0 = none yet).
static VERIFY_ROUND: AtomicU64 = AtomicU64::new(0);
/// Round each vCPU last finished.
static VERIFY_DONE: [PerCpu; MAX_CPUS] = [PERCPU0; MAX_CPUS];
static VERIFY_RESULTS: Global<[VerifyResult; MAX_CPUS]> =
    Global::new([VerifyResult::EMPTY; MAX_CPUS]);
pub(super) static VERIFY_PASSES: AtomicU64 = AtomicU64::new(0);
pub(super) static VERIFY_FAILS: AtomicU64 = AtomicU64::new(0);
/// The round in progress is the final one (run= elapsed).
pub(super) static FINAL: AtomicBool = AtomicBool::new(false);
static COLLECTED: AtomicU64 = AtomicU64::new(0);

pub(super) fn verify_start() {
    let r = VERIFY_ROUND.load(Relaxed);
    if COLLECTED.load(Relaxed) == r {
        VERIFY_ROUND.store(r + 1, Release);
    }
}

/// The round `cpu` should verify now, if any.
#[inline]
pub fn verify_due(cpu: usize) -> Option<u64> {
    let r = VERIFY_ROUND.load(Acquire);
    (r > VERIFY_DONE[cpu].0.load(Relaxed)).then_some(r)
}

/// Reports `cpu`'s result for `round`.
pub fn verify_done(cpu: usize, round: u64, result: VerifyResult) {
    unsafe { (*VERIFY_RESULTS.0.get())[cpu] = result };
    VERIFY_DONE[cpu].0.store(round, Release);
}

/// Once every vCPU has reported the round in progress: counts it, prints
/// its `VERIFY` line and, after the final round, ends the guest.
pub(super) fn verify_collect() {
    let r = VERIFY_ROUND.load(Relaxed);
    if COLLECTED.load(Relaxed) == r {
        return;
    }
    let n = nthreads();
    if (0..n).any(|c| VERIFY_DONE[c].0.load(Acquire) < r) {
        return;
    }
    COLLECTED.store(r, Relaxed);
    let results = unsafe { &*VERIFY_RESULTS.0.get() };
    let mut total = VerifyResult::EMPTY;
    for v in &results[..n] {
        total.add(v);
    }
    report(&total);
    if FINAL.load(Relaxed) {
        let h = unsafe { HEART.get() };
        h.beat(now(), true);
        exit(if VERIFY_FAILS.load(Relaxed) == 0 {
            EXIT_OK
        } else {
            EXIT_INTEGRITY
        });
    }
}

/// Counts a round as passed or failed and prints its `VERIFY` line.
fn report(total: &VerifyResult) {
    match total.first {
        None => {
            VERIFY_PASSES.fetch_add(1, Relaxed);
            if total.keys > 0 {
                println(format_args!(
                    "VERIFY ok pages={} keys={} gen={}",
                    total.pages, total.keys, total.max_gen
                ));
            } else {
                println(format_args!(
                    "VERIFY ok pages={} gen={}",
                    total.pages, total.max_gen
                ));
            }
        }
        Some((kind, index, expected, found)) => {
            VERIFY_FAILS.fetch_add(1, Relaxed);
            println(format_args!(
                "VERIFY FAIL {kind}={index} expected={expected} found={found} failures={}",
                total.fails
            ));
        }
    }
}
