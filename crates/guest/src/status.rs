//! The guest status page: counters vCPU 0 publishes at guest-physical
//! [`GPA`] at every heartbeat, so the VMM can read them without a VM exit.
//! A seqlock protects them: `seq` is odd while the guest writes. Beside
//! them, each vCPU counts the passes of its loop in a slot of its own
//! ([`VcpuSlot`]), for samplers that need to see the guest run.
//!
//! The layout (docs/GUESTS.md) is `programs/common/status_layout.rs`, the
//! very file the guests write by.

#[path = "../programs/common/status_layout.rs"]
mod layout;

pub use layout::{GPA, LEN, LONG_GAP_US, MAGIC, MAX_SLOTS, PAGE_SIZE, SLOT_SIZE, SLOTS, VERSION};

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
    /// The guest's TSC frequency in kHz.
    pub tsc_khz: u64,
}

/// One vCPU's slot: how far its loop got, read without the seqlock (each
/// field is one word the vCPU stores alone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VcpuSlot {
    /// Passes of the vCPU's loop so far.
    pub passes: u64,
    /// The guest TSC at the latest pass.
    pub pass_tsc: u64,
    /// Gaps between two passes of at least [`LONG_GAP_US`] so far.
    pub long_gaps: u64,
    /// The latest such gap, in TSC ticks.
    pub long_gap_ticks: u64,
}

impl VcpuSlot {
    /// Decodes a slot from its [`SLOT_SIZE`] bytes (shorter input reads as zeros).
    pub fn decode(bytes: &[u8]) -> VcpuSlot {
        let word = |off: usize| {
            bytes
                .get(off..off + 8)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        let gap = word(layout::SLOT_LONG_GAP);
        VcpuSlot {
            passes: word(layout::SLOT_PASSES),
            pass_tsc: word(layout::SLOT_PASS_TSC),
            long_gaps: gap >> layout::LONG_GAP_BITS,
            long_gap_ticks: gap & ((1 << layout::LONG_GAP_BITS) - 1),
        }
    }

    /// The slot's bytes, as the guest writes them (for tests and tools).
    pub fn encode(&self) -> [u8; SLOT_SIZE] {
        let mut b = [0u8; SLOT_SIZE];
        let gap = (self.long_gaps << layout::LONG_GAP_BITS)
            | (self.long_gap_ticks & ((1 << layout::LONG_GAP_BITS) - 1));
        for (off, v) in [
            (layout::SLOT_PASSES, self.passes),
            (layout::SLOT_PASS_TSC, self.pass_tsc),
            (layout::SLOT_LONG_GAP, gap),
        ] {
            b[off..off + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// The byte range of the page holding the slots of `vcpus` vCPUs.
pub fn slots_range(vcpus: usize) -> std::ops::Range<usize> {
    SLOTS..SLOTS + vcpus.min(MAX_SLOTS) * SLOT_SIZE
}

/// The slots of the first `vcpus` vCPUs from a copy of [`slots_range`].
pub fn decode_slots(bytes: &[u8], vcpus: usize) -> Vec<VcpuSlot> {
    (0..vcpus.min(MAX_SLOTS))
        .map(|i| VcpuSlot::decode(bytes.get(i * SLOT_SIZE..).unwrap_or(&[])))
        .collect()
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
    let seq = u64_at(bytes, layout::SEQ);
    if seq % 2 == 1 {
        return Err(StatusError::Torn(seq));
    }
    let vv = u64_at(bytes, layout::VERSION_VCPUS);
    let version = vv as u32;
    if version != VERSION {
        return Err(StatusError::Version(version));
    }
    let name = &bytes[layout::WORKLOAD..layout::WORKLOAD + layout::WORKLOAD_LEN];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(Status {
        version,
        vcpus: (vv >> 32) as u32,
        heartbeat_seq: u64_at(bytes, layout::HEARTBEAT_SEQ),
        heartbeat_tsc: u64_at(bytes, layout::HEARTBEAT_TSC),
        pages_written: u64_at(bytes, layout::PAGES_WRITTEN),
        write_rate: u64_at(bytes, layout::WRITE_RATE),
        verify_passes: u64_at(bytes, layout::VERIFY_PASSES),
        verify_failures: u64_at(bytes, layout::VERIFY_FAILURES),
        ops: u64_at(bytes, layout::OPS),
        ops_per_sec: u64_at(bytes, layout::OPS_PER_SEC),
        p50_ns: u64_at(bytes, layout::P50_NS),
        p99_ns: u64_at(bytes, layout::P99_NS),
        workload: String::from_utf8_lossy(&name[..end]).into_owned(),
        tsc_khz: u64_at(bytes, layout::TSC_KHZ),
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
        let seq_before = unsafe { std::ptr::read_volatile(p.add(layout::SEQ) as *const [u8; 8]) };
        for (i, b) in copy.iter_mut().enumerate() {
            *b = unsafe { std::ptr::read_volatile(p.add(i)) };
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let seq_after = unsafe { std::ptr::read_volatile(p.add(layout::SEQ) as *const [u8; 8]) };
        if seq_before != seq_after || copy[layout::SEQ..layout::SEQ + 8] != seq_before {
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
        (layout::SEQ, seq),
        (
            layout::VERSION_VCPUS,
            u64::from(s.version) | (u64::from(s.vcpus) << 32),
        ),
        (layout::HEARTBEAT_SEQ, s.heartbeat_seq),
        (layout::HEARTBEAT_TSC, s.heartbeat_tsc),
        (layout::PAGES_WRITTEN, s.pages_written),
        (layout::WRITE_RATE, s.write_rate),
        (layout::VERIFY_PASSES, s.verify_passes),
        (layout::VERIFY_FAILURES, s.verify_failures),
        (layout::OPS, s.ops),
        (layout::OPS_PER_SEC, s.ops_per_sec),
        (layout::P50_NS, s.p50_ns),
        (layout::P99_NS, s.p99_ns),
        (layout::TSC_KHZ, s.tsc_khz),
    ];
    for (off, v) in words {
        b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    let n = s.workload.len().min(layout::WORKLOAD_LEN - 1);
    b[layout::WORKLOAD..layout::WORKLOAD + n].copy_from_slice(&s.workload.as_bytes()[..n]);
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
            tsc_khz: 2_300_000,
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
    fn layout_fields_follow_each_other() {
        use layout::*;
        let words = [
            SEQ,
            VERSION_VCPUS,
            HEARTBEAT_SEQ,
            HEARTBEAT_TSC,
            PAGES_WRITTEN,
            WRITE_RATE,
            VERIFY_PASSES,
            VERIFY_FAILURES,
            OPS,
            OPS_PER_SEC,
            P50_NS,
            P99_NS,
            WORKLOAD,
        ];
        // The magic, then one u64 each, then the name, then the TSC rate.
        for (i, off) in words.into_iter().enumerate() {
            assert_eq!(off, MAGIC.len() + 8 * i);
        }
        assert_eq!(TSC_KHZ, WORKLOAD + WORKLOAD_LEN);
        assert_eq!(LEN, 128);
        // Slots start on a cache line, one line each.
        assert_eq!(SLOTS % 64, 0);
        assert_eq!(SLOT_SIZE, 64);
        assert_eq!(slots_range(2), 256..384);
        assert_eq!(slots_range(99).end, SLOTS + MAX_SLOTS * SLOT_SIZE);
    }

    #[test]
    fn slots_round_trip() {
        let a = VcpuSlot {
            passes: 7,
            pass_tsc: 123,
            long_gaps: 3,
            long_gap_ticks: 2_300_000,
        };
        let b = VcpuSlot {
            passes: 1 << 40,
            ..VcpuSlot::default()
        };
        let mut bytes = a.encode().to_vec();
        bytes.extend(b.encode());
        assert_eq!(decode_slots(&bytes, 2), [a, b]);
        // A short copy reads as zeros past its end.
        assert_eq!(decode_slots(&bytes[..8], 2)[1], VcpuSlot::default());
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
        let mut v1 = sample();
        v1.version = 1;
        page[..LEN].copy_from_slice(&encode(&v1, 8));
        assert_eq!(decode(&page), Err(StatusError::Version(1)));
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
