//! Encode/decode throughput of whole snapshots held in memory.
//!
//! `cargo bench -p vmstate [-- --memory-mib N --runs N]`
//!
//! Guest memory of N MiB (default 1024) with 25% of its pages written,
//! either scattered (each page written with probability 1/4: many short
//! runs, the worst case for per-record overhead) or as one contiguous block.
//! Prints the median of several runs, in GiB/s of guest memory (what a user
//! waits for) and of page data actually encoded.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use vmstate::{SinkError, SnapshotSink, SnapshotWriter, VmConfig, is_zero_page, read_snapshot};

const PAGE: usize = 4096;
const GIB: f64 = (1u64 << 30) as f64;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn measure(runs: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm up
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

/// Copies pages into one pre-faulted region, like a VMM's guest memory.
struct Guest<'a> {
    mem: &'a mut [u8],
}

impl SnapshotSink for Guest<'_> {
    fn config(&mut self, c: &VmConfig) -> Result<(), SinkError> {
        if c.memory_bytes as usize != self.mem.len() {
            return Err("size mismatch".into());
        }
        Ok(())
    }
    fn pages(&mut self, gpa: u64, data: &[u8]) -> Result<(), SinkError> {
        self.mem[gpa as usize..gpa as usize + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn zero_pages(&mut self, gpa: u64, count: u64) -> Result<(), SinkError> {
        self.mem[gpa as usize..gpa as usize + count as usize * PAGE].fill(0);
        Ok(())
    }
}

fn faulted_zeros(len: usize) -> Vec<u8> {
    let mut v = vec![1u8; len];
    v.fill(0);
    std::hint::black_box(v)
}

fn main() {
    let mut memory_mib = 1024u64;
    let mut runs = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--memory-mib" => {
                memory_mib = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--memory-mib N")
            }
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            _ => {} // cargo passes --bench
        }
    }
    let bytes = memory_mib << 20;
    let config = VmConfig {
        memory_bytes: bytes,
        vcpus: 2,
        regions: vec![(0, bytes)],
        cmdline: String::new(),
        kernel: "bench".into(),
        tsc_khz: 2_300_000,
    };
    let state = common::state(&config);
    let mut dest = vec![0u8; bytes as usize];
    dest.fill(1); // fault the destination in

    println!("vmstate codec, {memory_mib} MiB guest, 25% of pages written, median of {runs} runs");
    // All memory below is faulted in (not the kernel's shared zero page), as
    // for a guest that has touched its memory: the conservative case.
    let zero = faulted_zeros(bytes as usize);
    let t = measure(runs, || {
        let n = zero.chunks_exact(PAGE).filter(|p| is_zero_page(p)).count();
        assert_eq!(n as u64, bytes / PAGE as u64);
    });
    println!(
        "is_zero_page over all-zero memory: {:.2} GiB/s",
        bytes as f64 / GIB / t.as_secs_f64()
    );
    drop(zero);

    for layout in ["scattered", "contiguous"] {
        let mut mem = faulted_zeros(bytes as usize);
        let pages = bytes as usize / PAGE;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for (i, page) in mem.chunks_exact_mut(PAGE).enumerate() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let written = match layout {
                "scattered" => x.is_multiple_of(4),
                _ => i < pages / 4,
            };
            if written {
                for (j, w) in page.chunks_exact_mut(8).enumerate() {
                    w.copy_from_slice(&(x ^ j as u64).to_le_bytes());
                }
            }
        }
        let encode = |out: &mut Vec<u8>| {
            out.clear();
            let mut w = SnapshotWriter::new(&mut *out, &config).unwrap();
            w.memory(0, &mem).unwrap();
            w.finish(&state).unwrap().1
        };
        let mut out = Vec::with_capacity(bytes as usize / 3);
        let stats = encode(&mut out);
        let data = stats.pages as f64 * PAGE as f64;

        let t_sink = measure(runs, || {
            let mut w = SnapshotWriter::new(std::io::sink(), &config).unwrap();
            w.memory(0, &mem).unwrap();
            w.finish(&state).unwrap();
        });
        let t_enc = measure(runs, || {
            encode(&mut out);
        });
        let t_dec = measure(runs, || {
            let (_, s) = read_snapshot(&out[..], &mut Guest { mem: &mut dest }).unwrap();
            assert_eq!(s.pages, stats.pages);
        });
        println!(
            "{layout:>10}: {} pages in {} records, stream {:.1} MiB",
            stats.pages,
            stats.frames,
            stats.bytes as f64 / (1 << 20) as f64
        );
        for (what, t) in [
            ("encode to io::sink", t_sink),
            ("encode to Vec", t_enc),
            ("decode into guest memory", t_dec),
        ] {
            println!(
                "{:>10}  {what:<26} {:>8.1} ms  {:>6.2} GiB/s of guest memory  {:>6.2} GiB/s of page data",
                "",
                t.as_secs_f64() * 1e3,
                bytes as f64 / GIB / t.as_secs_f64(),
                data / GIB / t.as_secs_f64(),
            );
        }
    }
}
