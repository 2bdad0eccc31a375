//! `kvstore`: an in-memory hash table serving a request loop generated in
//! the guest: Zipf-distributed keys, a read/write mix, per-operation latency
//! from the TSC in a log-linear histogram. vCPU 0 prints throughput and
//! percentiles every second. Each vCPU serves its own shard (keys with
//! `key % vcpus == cpu`), so no locks. Self-check: every value must match the
//! content derived from (key, version), with versions kept in a separate
//! array, so a lost or stale page of the table or of the values shows.

#![no_std]
#![no_main]

#[path = "rt/mod.rs"]
mod rt;

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rt::hist::{self, BUCKETS};
use rt::params::{Params, Program};
use rt::pattern;
use rt::zipf;

const PROGRAM: Program = Program::Kvstore;

/// One open-addressing slot: key + 1 (0 = empty) and the value's index.
#[derive(Clone, Copy)]
#[repr(C)]
struct Slot {
    key1: u64,
    idx: u64,
}

/// One vCPU's part of the store.
struct Shard {
    slots: &'static mut [Slot],
    values: &'static mut [u64],
    versions: &'static mut [u32],
    /// Zipf CDF over this shard's keys, scaled to 2^32.
    cdf: &'static mut [u32],
}

static SHARDS: rt::Global<[Option<Shard>; rt::MAX_CPUS]> =
    rt::Global::new([const { None }; rt::MAX_CPUS]);

/// Latency histograms, one per vCPU (written by it, read by vCPU 0).
static HIST: [[AtomicU64; BUCKETS]; rt::MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; BUCKETS] }; rt::MAX_CPUS];

fn shard_keys(keys: u64, threads: usize, cpu: usize) -> usize {
    (keys / threads as u64 + u64::from((cpu as u64) < keys % threads as u64)) as usize
}

fn setup(_boot: &rt::Boot, p: &Params) {
    let threads = rt::nthreads();
    let vwords = (p.vsize / 8) as usize;
    let shards = unsafe { SHARDS.get() };
    for (cpu, shard) in shards.iter_mut().enumerate().take(threads) {
        let n = shard_keys(p.keys, threads, cpu);
        let cap = (2 * n).next_power_of_two().max(2);
        *shard = Some(Shard {
            slots: rt::alloc_slice::<Slot>(cap, "the hash table (keys=)"),
            values: rt::alloc_slice::<u64>(n * vwords, "the values (keys= vsize=)"),
            versions: rt::alloc_slice::<u32>(n, "the version array"),
            cdf: rt::alloc_slice::<u32>(n, "the key distribution"),
        });
    }
}

impl Shard {
    #[inline]
    fn find(&self, key: u64) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let mut i = pattern::mix(key) as usize & mask;
        for _ in 0..self.slots.len() {
            let s = self.slots[i];
            if s.key1 == key + 1 {
                return Some(s.idx as usize);
            }
            if s.key1 == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
        None
    }

    fn insert(&mut self, key: u64, idx: usize) {
        let mask = self.slots.len() - 1;
        let mut i = pattern::mix(key) as usize & mask;
        while self.slots[i].key1 != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = Slot {
            key1: key + 1,
            idx: idx as u64,
        };
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn run(cpu: usize) -> ! {
    let p = rt::params();
    let threads = rt::nthreads();
    let vw = (p.vsize / 8) as usize;
    let shard = unsafe { SHARDS.get()[cpu].as_mut().unwrap() };
    let n = shard.versions.len();
    if n == 0 {
        // Fewer keys than vCPUs: nothing to serve here.
        loop {
            rt::poll(cpu);
            if let Some(round) = rt::verify_due(cpu) {
                rt::verify_done(cpu, round, rt::VerifyResult::EMPTY);
            }
            rt::rest_until(cpu, u64::MAX);
        }
    }
    let global = |k: usize| (k * threads + cpu) as u64;

    // Build the key distribution: P(rank r) ~ 1 / (r + 1)^zipf.
    let total = zipf::total(n, p.zipf, || {
        rt::poll(cpu);
    });
    zipf::fill_cdf(shard.cdf, p.zipf, total, || {
        rt::poll(cpu);
    });
    // The table must start empty, whatever the firmware left in this RAM.
    for (i, chunk) in shard.slots.chunks_mut(256).enumerate() {
        chunk.fill(Slot { key1: 0, idx: 0 });
        if i % 16 == 0 {
            rt::poll(cpu);
        }
    }
    // Load every key at version 1, values in a scattered order so popular
    // keys do not share pages.
    let mut step = (n as f64 * 0.618) as usize | 1;
    while n > 1 && gcd(step, n) != 1 {
        step += 1;
    }
    for i in 0..n {
        let k = (i * step) % n.max(1);
        shard.insert(global(k), i);
        shard.versions[k] = 1;
        pattern::fill(&mut shard.values[i * vw..(i + 1) * vw], global(k), 1);
        if i % 256 == 0 {
            rt::poll(cpu);
        }
    }

    let mut rng = rt::Rng::new(0x6b76 + cpu as u64);
    let read_cut = (p.reads * 4_294_967_296.0) as u64;
    let ns_per_tick = ((1_000_000u128 << 32) / rt::tsc_khz().max(1) as u128) as u64;
    let hist = &HIST[cpu];
    let mut buf = [0u64; 8192];
    let mut sink = 0u64;
    let mut report = Report::new();
    loop {
        if rt::poll(cpu) {
            report.maybe_print();
        }
        if let Some(round) = rt::verify_due(cpu) {
            verify(cpu, round, shard, vw, threads);
        }
        let t0 = rt::now();
        let r = rng.next();
        let k = zipf::rank(shard.cdf, r as u32);
        let key = global(k);
        if (r >> 32) < read_cut {
            if let Some(idx) = shard.find(key) {
                let v = &shard.values[idx * vw..(idx + 1) * vw];
                buf[..vw].copy_from_slice(v);
                sink = sink.wrapping_add(buf[vw - 1]);
            }
        } else {
            let ver = if shard.versions[k] == u32::MAX {
                1
            } else {
                shard.versions[k] + 1
            };
            shard.versions[k] = ver;
            if let Some(idx) = shard.find(key) {
                pattern::fill(&mut shard.values[idx * vw..(idx + 1) * vw], key, ver);
            }
        }
        let dt = rt::now() - t0;
        let ns = ((dt as u128 * ns_per_tick as u128) >> 32) as u64;
        let b = &hist[hist::bucket(ns)];
        b.store(b.load(Relaxed) + 1, Relaxed);
        rt::progress(cpu, 1);
        core::hint::black_box(sink);
    }
}

/// vCPU 0's once-a-second `KV` line.
struct Report {
    last: u64,
    ops: u64,
    prev: [u64; BUCKETS],
}

impl Report {
    fn new() -> Report {
        Report {
            last: rt::now(),
            ops: rt::progress_total(),
            prev: [0; BUCKETS],
        }
    }

    fn maybe_print(&mut self) {
        let t = rt::now();
        let span = t - self.last;
        if span < rt::tsc_hz() {
            return;
        }
        let mut cur = [0u64; BUCKETS];
        for h in HIST.iter().take(rt::nthreads()) {
            for (c, b) in cur.iter_mut().zip(h.iter()) {
                *c += b.load(Relaxed);
            }
        }
        let mut diff = [0u64; BUCKETS];
        for ((d, c), p) in diff.iter_mut().zip(cur.iter()).zip(self.prev.iter()) {
            *d = c - p;
        }
        self.prev = cur;
        let ops = rt::progress_total();
        let ops_s = ((ops - self.ops) as u128 * rt::tsc_hz() as u128 / span as u128) as u64;
        let (p50, p99, p999) = (
            hist::percentile(&diff, 0.5),
            hist::percentile(&diff, 0.99),
            hist::percentile(&diff, 0.999),
        );
        rt::P50_NS.store(p50, Relaxed);
        rt::P99_NS.store(p99, Relaxed);
        rt::println(format_args!(
            "KV ops={ops} ops_s={ops_s} p50_ns={p50} p99_ns={p99} p999_ns={p999}"
        ));
        self.last = t;
        self.ops = ops;
    }
}

/// Checks every key of this shard: present, and its value matches its version.
fn verify(cpu: usize, round: u64, shard: &Shard, vw: usize, threads: usize) {
    let mut r = rt::VerifyResult::EMPTY;
    let bytes =
        core::mem::size_of_val(shard.slots) + shard.values.len() * 8 + shard.versions.len() * 4;
    r.pages = bytes.div_ceil(4096) as u64;
    for (k, &ver) in shard.versions.iter().enumerate() {
        let key = (k * threads + cpu) as u64;
        let res = match shard.find(key) {
            Some(idx) if (idx + 1) * vw <= shard.values.len() => {
                pattern::check(&shard.values[idx * vw..(idx + 1) * vw], key, ver)
            }
            _ => Err(pattern::Found::Corrupt),
        };
        r.keys += 1;
        r.record("key", key, ver, res);
        if k % 64 == 0 {
            rt::poll(cpu);
        }
    }
    rt::verify_done(cpu, round, r);
}
