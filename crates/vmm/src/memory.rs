//! Guest RAM: layout and allocation. Which pages the host has backed is
//! `vmstate::resident_pages`.

use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::Error;

/// 4 KiB guest page.
pub const PAGE_SIZE: u64 = 4096;
/// Guest-physical start of the hole below 4 GiB (interrupt controllers live there).
pub const MMIO_HOLE_START: u64 = 0xC000_0000;
/// First guest-physical address above the hole.
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;

/// RAM regions for `bytes` of guest memory: low RAM up to 3 GiB, the rest above 4 GiB.
pub fn layout(bytes: u64) -> Vec<(u64, u64)> {
    if bytes <= MMIO_HOLE_START {
        vec![(0, bytes)]
    } else {
        vec![
            (0, MMIO_HOLE_START),
            (HIGH_RAM_START, bytes - MMIO_HOLE_START),
        ]
    }
}

/// Bytes the host could give us now (MemAvailable), if the kernel says.
fn host_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Allocates guest RAM for `regions`, refusing sizes the host cannot back.
pub fn allocate(regions: &[(u64, u64)]) -> Result<GuestMemoryMmap, Error> {
    let total: u64 = regions.iter().map(|r| r.1).sum();
    if total == 0
        || regions
            .iter()
            .any(|r| r.1 % PAGE_SIZE != 0 || r.0 % PAGE_SIZE != 0)
    {
        return Err(Error::MemoryUnaligned { bytes: total });
    }
    if let Some(avail) = host_available()
        && total > avail
    {
        return Err(Error::MemoryUnavailable {
            wanted: total,
            available: avail,
        });
    }
    let ranges: Vec<_> = regions
        .iter()
        .map(|&(start, len)| (GuestAddress(start), len as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| Error::MapMemory {
        bytes: total,
        source,
    })
}

/// A region's host mapping, for bulk copies. Valid while the memory lives.
#[derive(Clone, Copy, Debug)]
pub struct HostRegion {
    pub gpa: u64,
    pub host: *mut u8,
    pub len: u64,
}

// SAFETY: the pointer refers to a shared mapping owned by the VM; users only
// do bounded, volatile-tolerant copies through it.
unsafe impl Send for HostRegion {}
// SAFETY: as above.
unsafe impl Sync for HostRegion {}

/// Host mappings of every region, in guest-physical order.
pub fn host_regions(mem: &GuestMemoryMmap) -> Vec<HostRegion> {
    mem.iter()
        .map(|r| HostRegion {
            gpa: r.start_addr().raw_value(),
            host: r.as_ptr(),
            len: r.len(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_splits_around_the_hole() {
        assert_eq!(layout(1 << 30), vec![(0, 1 << 30)]);
        assert_eq!(
            layout(4 << 30),
            vec![
                (0, MMIO_HOLE_START),
                (HIGH_RAM_START, (4 << 30) - MMIO_HOLE_START)
            ]
        );
    }

    #[test]
    fn impossible_sizes_are_refused() {
        let err = allocate(&[(0, 1 << 50)]).unwrap_err().to_string();
        assert!(err.contains("available"), "{err}");
    }
}
