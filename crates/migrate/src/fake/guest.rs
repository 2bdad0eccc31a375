//! The fake guest: a thread that writes pages at a set rate, with content
//! derived from (page, generation), and keeps its own dirty bits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::spec::{FakeSpec, WritePattern};
use crate::vm::VmError;

/// Run state of the fake source VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    /// Handed over to the destination: will never run again.
    Retired,
}

pub(super) struct Ctl {
    pub(super) state: RunState,
    pub(super) stop: bool,
}

pub(super) struct Shared {
    pub(super) dirty: Vec<AtomicU64>,
    pub(super) ctl: Mutex<Ctl>,
    pub(super) cv: Condvar,
    pub(super) writes: AtomicU64,
    /// Throttle fraction as f64 bits (0 = full speed).
    pub(super) throttle: AtomicU64,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Ctl> {
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Content the guest stores in `page` at generation `generation`.
pub fn pattern_word(page: u64, generation: u64, word: u64) -> u64 {
    let mut x = page.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ generation.rotate_left(17) ^ word;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29) | 1
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

pub(super) fn write_page(
    memory: &GuestMemoryMmap,
    shared: &Shared,
    idx: u64,
    gpa: u64,
    generation: u64,
) -> Result<(), VmError> {
    // A header word and 8 words at a generation-dependent offset.
    let mut block = [0u8; 64];
    for (k, chunk) in block.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&pattern_word(idx, generation, k as u64).to_le_bytes());
    }
    let off = 64 + (generation % 62) * 64;
    memory.write_slice(&generation.to_le_bytes(), GuestAddress(gpa))?;
    memory.write_slice(&block, GuestAddress(gpa + off))?;
    let (w, b) = ((idx / 64) as usize, idx % 64);
    shared.dirty[w].fetch_or(1 << b, Ordering::SeqCst);
    Ok(())
}

pub(super) fn guest_loop(
    memory: GuestMemoryMmap,
    shared: Arc<Shared>,
    ws: Vec<(u64, u64)>,
    spec: FakeSpec,
) {
    let tick = Duration::from_millis(1);
    let per_tick = spec.writes_per_sec as f64 / 1000.0;
    let mut credit = 0.0f64;
    let mut rng = spec.seed.max(1);
    let mut generation = 1u64;
    let mut seq = 0usize;
    let mut next = Instant::now();
    loop {
        {
            let mut ctl = shared.lock();
            while ctl.state != RunState::Running && !ctl.stop {
                ctl = shared.cv.wait(ctl).unwrap_or_else(|p| p.into_inner());
                next = Instant::now();
            }
            if ctl.stop {
                return;
            }
            // Writes happen with the lock held, so pause() waits for a write boundary.
            let throttle = f64::from_bits(shared.throttle.load(Ordering::Relaxed));
            credit += per_tick * (1.0 - throttle).clamp(0.0, 1.0);
            while credit >= 1.0 && !ws.is_empty() {
                credit -= 1.0;
                let i = match spec.pattern {
                    WritePattern::Uniform => (xorshift(&mut rng) % ws.len() as u64) as usize,
                    WritePattern::Sequential => {
                        seq = (seq + 1) % ws.len();
                        seq
                    }
                    WritePattern::HotSet {
                        hot_fraction,
                        hot_share,
                    } => {
                        let hot = ((ws.len() as f64 * hot_fraction) as usize).clamp(1, ws.len());
                        let r = xorshift(&mut rng);
                        if (r % 10_000) as f64 / 10_000.0 < hot_share {
                            (xorshift(&mut rng) % hot as u64) as usize
                        } else {
                            (xorshift(&mut rng) % ws.len() as u64) as usize
                        }
                    }
                };
                let (idx, gpa) = ws[i];
                generation += 1;
                if write_page(&memory, &shared, idx, gpa, generation).is_err() {
                    return;
                }
                shared.writes.fetch_add(1, Ordering::Relaxed);
            }
        }
        next += tick;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}
