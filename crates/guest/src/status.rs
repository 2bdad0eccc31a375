//! The guest status page: counters vCPU 0 publishes at guest-physical
//! [`GPA`] at every heartbeat, so the VMM can read them without a VM exit.
//! A seqlock protects it: `seq` is odd while the guest writes.
//!
//! Layout (little-endian u64 unless noted), see docs/GUESTS.md:
//! 0 magic `FERRYST1`; 8 seq; 16 layout version (u32) + vCPUs (u32);
//! 24 heartbeat seq; 32 TSC of that heartbeat; 40 pages written; 48 write
//! rate (pages/s); 56 verify passes; 64 verify failures; 72 ops; 80 ops/s;
//! 88 p50 latency (ns); 96 p99 latency (ns); 104 workload name (16 bytes, NUL padded).

/// Guest-physical address of the status page.
pub const GPA: u64 = 0x6000;
/// Size of the status page (the guest reserves the whole page).
pub const PAGE_SIZE: usize = 4096;
/// Bytes of the page in use.
pub const LEN: usize = 120;
/// First eight bytes of a valid page.
pub const MAGIC: [u8; 8] = *b"FERRYST1";
/// The layout version this crate reads.
pub const VERSION: u32 = 1;

/// A consistent snapshot of the guest's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub version: u32,
    pub vcpus: u32,
    pub heartbeat_seq: u64,
    pub heartbeat_tsc: u64,
    pub pages_written: u64,
    pub write_rate: u64,
    pub verify_passes: u64,
    pub verify_failures: u64,
    pub ops: u64,
    pub ops_per_sec: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    /// The workload's name (`dirtier`, `idle`, `kvstore`).
    pub workload: String,
}

/// Why one attempt to decode the page failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("status page too short: {0} bytes, need {LEN}")]
    TooShort(usize),
    #[error(
        "no guest status (magic missing): the guest has not booted yet or is not a Ferry guest"
    )]
    NoMagic,
    #[error("status page layout version {0} is not supported (this host reads version {VERSION})")]
    Version(u32),
    #[error("the guest was writing the status page (sequence {0})")]
    Torn(u64),
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Decodes one copy of the page; a copy taken while the guest wrote is refused.
pub fn decode(bytes: &[u8]) -> Result<Status, StatusError> {
    if bytes.len() < LEN {
        return Err(StatusError::TooShort(bytes.len()));
    }
    if bytes[..8] != MAGIC {
        return Err(StatusError::NoMagic);
    }
    let seq = u64_at(bytes, 8);
    if seq % 2 == 1 {
        return Err(StatusError::Torn(seq));
    }
    let vv = u64_at(bytes, 16);
    let version = vv as u32;
    if version != VERSION {
        return Err(StatusError::Version(version));
    }
    let name = &bytes[104..120];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(Status {
        version,
        vcpus: (vv >> 32) as u32,
        heartbeat_seq: u64_at(bytes, 24),
        heartbeat_tsc: u64_at(bytes, 32),
        pages_written: u64_at(bytes, 40),
        write_rate: u64_at(bytes, 48),
        verify_passes: u64_at(bytes, 56),
        verify_failures: u64_at(bytes, 64),
        ops: u64_at(bytes, 72),
        ops_per_sec: u64_at(bytes, 80),
        p50_ns: u64_at(bytes, 88),
        p99_ns: u64_at(bytes, 96),
        workload: String::from_utf8_lossy(&name[..end]).into_owned(),
    })
}

/// Reads a consistent snapshot from `page` (live guest memory that a
/// running guest may be writing): copies it with volatile reads and retries
/// while `seq` is odd or changed during the copy. `None` if there is no
/// valid status or no stable copy after many tries.
pub fn read(page: &[u8]) -> Option<Status> {
    if page.len() < LEN {
        return None;
    }
    let p = page.as_ptr();
    for _ in 0..10_000 {
        let mut copy = [0u8; LEN];
        // Volatile: the guest writes this memory concurrently.
        let seq_before = unsafe { std::ptr::read_volatile(p.add(8) as *const [u8; 8]) };
        for (i, b) in copy.iter_mut().enumerate() {
            *b = unsafe { std::ptr::read_volatile(p.add(i)) };
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let seq_after = unsafe { std::ptr::read_volatile(p.add(8) as *const [u8; 8]) };
        if seq_before != seq_after || copy[8..16] != seq_before {
            std::hint::spin_loop();
            continue;
        }
        match decode(&copy) {
            Ok(s) => return Some(s),
            Err(StatusError::Torn(_)) => std::hint::spin_loop(),
            Err(_) => return None,
        }
    }
    None
}

/// Encodes `s` with sequence `seq` (what a guest writes; for tests and tools).
pub fn encode(s: &Status, seq: u64) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..8].copy_from_slice(&MAGIC);
    let words = [
        (8, seq),
        (16, u64::from(s.version) | (u64::from(s.vcpus) << 32)),
        (24, s.heartbeat_seq),
        (32, s.heartbeat_tsc),
        (40, s.pages_written),
        (48, s.write_rate),
        (56, s.verify_passes),
        (64, s.verify_failures),
        (72, s.ops),
        (80, s.ops_per_sec),
        (88, s.p50_ns),
        (96, s.p99_ns),
    ];
    for (off, v) in words {
        b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    let n = s.workload.len().min(15);
    b[104..104 + n].copy_from_slice(&s.workload.as_bytes()[..n]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            version: VERSION,
            vcpus: 2,
            heartbeat_seq: 41,
            heartbeat_tsc: 123_456_789,
            pages_written: 82,
            write_rate: 50_000,
            verify_passes: 3,
            verify_failures: 0,
            ops: 0,
            ops_per_sec: 0,
            p50_ns: 0,
            p99_ns: 0,
            workload: "dirtier".into(),
        }
    }

    #[test]
    fn round_trip() {
        let mut page = vec![0u8; PAGE_SIZE];
        page[..LEN].copy_from_slice(&encode(&sample(), 84));
        assert_eq!(read(&page), Some(sample()));
        assert_eq!(decode(&page), Ok(sample()));
    }

    #[test]
    fn refusals() {
        let mut page = vec![0u8; PAGE_SIZE];
        assert_eq!(read(&page), None);
        assert_eq!(decode(&page), Err(StatusError::NoMagic));
        assert_eq!(decode(&page[..10]), Err(StatusError::TooShort(10)));
        page[..LEN].copy_from_slice(&encode(&sample(), 7));
        assert_eq!(decode(&page), Err(StatusError::Torn(7)));
        // A page stuck mid-write never yields a snapshot.
        assert_eq!(read(&page), None);
        let mut v2 = sample();
        v2.version = 2;
        page[..LEN].copy_from_slice(&encode(&v2, 8));
        assert_eq!(decode(&page), Err(StatusError::Version(2)));
    }

    #[test]
    fn concurrent_writer_never_gives_a_torn_snapshot() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        // The writer keeps pages_written == heartbeat_seq * 2 in every consistent state.
        let mut initial = vec![0u8; PAGE_SIZE];
        initial[..LEN].copy_from_slice(&encode(&sample(), 0));
        let page: Arc<Vec<u8>> = Arc::new(initial);
        let addr = page.as_ptr() as usize;
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let _keep = page.clone();
            std::thread::spawn(move || {
                let p = addr as *mut u8;
                let mut s = sample();
                s.pages_written = s.heartbeat_seq * 2;
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    s.heartbeat_seq += 1;
                    s.pages_written = s.heartbeat_seq * 2;
                    let bytes = encode(&s, seq + 1);
                    unsafe {
                        std::ptr::write_volatile(p.add(8) as *mut u64, (seq + 1).to_le());
                        std::sync::atomic::fence(Ordering::Release);
                        for (i, &b) in bytes.iter().enumerate() {
                            if !(8..16).contains(&i) {
                                std::ptr::write_volatile(p.add(i), b);
                            }
                        }
                        std::sync::atomic::fence(Ordering::Release);
                        std::ptr::write_volatile(p.add(8) as *mut u64, (seq + 2).to_le());
                    }
                    seq += 2;
                    // A guest writes once per heartbeat, not back to back.
                    for _ in 0..500 {
                        std::hint::spin_loop();
                    }
                }
            })
        };
        let mut seen = 0;
        for _ in 0..2000 {
            if let Some(s) = read(&page) {
                assert_eq!(s.pages_written, s.heartbeat_seq * 2, "torn snapshot {s:?}");
                seen += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(seen > 0);
    }
}
