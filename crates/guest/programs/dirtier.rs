//! `dirtier`: writes whole 4 KiB pages of a working set at a paced rate and
//! verifies the whole set periodically. Each write fills the page with
//! content derived from (page index, generation); a per-page generation
//! table (in separate memory) says what every page must hold, and pages
//! never written must read as zero. Each vCPU owns one partition of the set.
//! With pattern `hot`, the hot set may sit elsewhere in each phase and
//! drift through the partition over time.

#![no_std]
#![no_main]

#[path = "rt/mod.rs"]
mod rt;

use rt::params::{AccessPattern, Params, Program};
use rt::pattern::{self, PAGE_WORDS};

const PROGRAM: Program = Program::Dirtier;

type Page = [u64; PAGE_WORDS];

struct State {
    pages: &'static mut [Page],
    gens: &'static mut [u32],
}
static STATE: rt::Global<State> = rt::Global::new(State {
    pages: &mut [],
    gens: &mut [],
});

fn setup(_boot: &rt::Boot, p: &Params) {
    let n = (p.ws / 4096) as usize;
    let gens = rt::alloc_slice::<u32>(n, "the generation table");
    let pages = rt::alloc_slice::<Page>(n, "the working set (ws=)");
    unsafe { *STATE.get() = State { pages, gens } };
}

/// vCPU `cpu`'s share `[lo, hi)` of `n` items split `parts` ways.
fn partition(n: usize, parts: usize, cpu: usize) -> (usize, usize) {
    (n * cpu / parts, n * (cpu + 1) / parts)
}

fn run(cpu: usize) -> ! {
    let p = rt::params();
    let threads = rt::nthreads();
    // Each vCPU touches only its own partition of both arrays.
    let state = unsafe { STATE.get() };
    let (lo, hi) = partition(state.pages.len(), threads, cpu);
    let pages =
        unsafe { core::slice::from_raw_parts_mut(state.pages.as_mut_ptr().add(lo), hi - lo) };
    let gens = unsafe { core::slice::from_raw_parts_mut(state.gens.as_mut_ptr().add(lo), hi - lo) };
    let len = pages.len();
    let share = p.rate / threads as u64 + u64::from((cpu as u64) < p.rate % threads as u64);
    let stalled = p.rate > 0 && share == 0;
    let mut pacer = rt::Pacer::new(share);
    let mut rng = rt::Rng::new(cpu as u64 + 1);
    let hot_len = ((len as f64 * p.hot) as usize).clamp(1, len.max(1));
    let phases = p.phases();
    let mut next = 0usize;
    // RAM the firmware used may hold old data: make sure every page of the
    // partition reads as zero (generation 0). On a fresh VM this only reads.
    for (i, page) in pages.iter_mut().enumerate() {
        if pattern::check(page, (lo + i) as u64, 0).is_err() {
            page.fill(0);
        }
        if i % 64 == 0 {
            rt::poll(cpu);
        }
    }
    let mut phase = 0;
    let t0 = rt::now();
    let mut phase_end = t0.saturating_add(rt::ticks(phases[0].ns));
    // Hot-set drift in pages per TSC tick.
    let drift = p.drift * len as f64 / rt::tsc_hz().max(1) as f64;
    loop {
        rt::poll(cpu);
        if let Some(round) = rt::verify_due(cpu) {
            verify(cpu, round, lo, pages, gens);
        }
        let t = rt::now();
        if t >= phase_end && phase + 1 < phases.len() {
            phase += 1;
            phase_end = t.saturating_add(rt::ticks(phases[phase].ns));
            pacer.reset();
        }
        if !phases[phase].busy || len == 0 || stalled {
            let last = phase + 1 == phases.len();
            rt::rest_until(cpu, if last { u64::MAX } else { phase_end });
            continue;
        }
        if !pacer.take() {
            rt::rest_until(cpu, pacer.next_at());
            continue;
        }
        let i = match p.pattern {
            AccessPattern::Seq => {
                let i = next;
                next = if next + 1 == len { 0 } else { next + 1 };
                i
            }
            AccessPattern::Random => rng.below(len as u64) as usize,
            AccessPattern::Hot => {
                let off = if hot_len == len || rng.unit() < p.hotshare {
                    rng.below(hot_len as u64) as usize
                } else {
                    hot_len + rng.below((len - hot_len) as u64) as usize
                };
                let at = phases[phase].hot_at * len as f64 + drift * (t - t0) as f64;
                (at as u64 % len as u64) as usize + off
            }
        };
        let i = if i >= len { i - len } else { i };
        let g = if gens[i] == u32::MAX { 1 } else { gens[i] + 1 };
        gens[i] = g;
        pattern::fill(&mut pages[i], (lo + i) as u64, g);
        rt::progress(cpu, 1);
    }
}

/// Checks every page of this vCPU's partition against its generation.
fn verify(cpu: usize, round: u64, lo: usize, pages: &[Page], gens: &[u32]) {
    let mut r = rt::VerifyResult::EMPTY;
    for (i, (page, &g)) in pages.iter().zip(gens.iter()).enumerate() {
        let index = (lo + i) as u64;
        r.pages += 1;
        r.record("page", index, g, pattern::check(page, index, g));
        rt::poll(cpu);
    }
    rt::verify_done(cpu, round, r);
}
