//! Guest RAM: layout and allocation, anonymous or in a shared file. Which
//! pages may hold data is `vmstate::resident_pages` (anonymous) or
//! `vmstate::file_data_pages` (a file).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use vm_memory::{
    Address, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

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
    allocate_in(regions, None)
}

/// Guest RAM for `regions`: anonymous private memory, or with `file`
/// the file itself, mapped shared, regions one after the other from
/// offset 0 (so its content outlives this process: a post-copy source's
/// memory, docs/SAFETY.md). An empty file is sized to the regions; a
/// file of another size is refused (it belongs to another VM).
pub fn allocate_in(
    regions: &[(u64, u64)],
    file: Option<&Arc<File>>,
) -> Result<GuestMemoryMmap, Error> {
    let total: u64 = regions.iter().map(|r| r.1).sum();
    if total == 0
        || regions
            .iter()
            .any(|r| r.1 % PAGE_SIZE != 0 || r.0 % PAGE_SIZE != 0)
    {
        return Err(Error::MemoryUnaligned { bytes: total });
    }
    if let Some(f) = file {
        let len = f.metadata().map_err(Error::MemoryFile)?.len();
        if len == 0 {
            f.set_len(total).map_err(Error::MemoryFile)?;
        } else if len != total {
            return Err(Error::MemoryFileSize { file: len, total });
        }
    }
    if let Some(avail) = host_available()
        && total > avail
        && file.is_none_or(|f| f.metadata().is_ok_and(|m| m.blocks() == 0))
    {
        return Err(Error::MemoryUnavailable {
            wanted: total,
            available: avail,
        });
    }
    let mut offset = 0;
    let ranges: Vec<_> = regions
        .iter()
        .map(|&(start, len)| {
            let at = file.map(|f| FileOffset::from_arc(Arc::clone(f), offset));
            offset += len;
            (GuestAddress(start), len as usize, at)
        })
        .collect();
    GuestMemoryMmap::from_ranges_with_files(ranges).map_err(|source| Error::MapMemory {
        bytes: total,
        source,
    })
}

/// Frees the pages of `file` (guest RAM in a file, [`allocate_in`]) so
/// that they no longer take memory: madvise frees nothing of a shared
/// file, punching holes does. They read as zero afterwards.
pub fn punch_out(file: &File, offset: u64, len: u64) -> Result<(), Error> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on a descriptor we borrow, inside its length.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if r != 0 {
        return Err(Error::MemoryFile(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A region's host mapping, for bulk copies. Valid while the memory lives.
#[derive(Clone, Copy, Debug)]
pub struct HostRegion {
    pub gpa: u64,
    pub host: *mut u8,
    pub len: u64,
    /// Mapped from a shared file (its pages live in the file, not the mapping).
    pub shared: bool,
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
            shared: r.file_offset().is_some(),
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

    /// A memory file: guest writes land in the file, a second mapping
    /// (a restarted process) sees them, another size is refused, and
    /// punched pages are holes again and read as zero.
    #[test]
    fn file_backed_memory_is_shared_through_the_file() {
        use std::os::fd::FromRawFd;
        use vm_memory::Bytes;
        // SAFETY: a fresh memfd owned by the File.
        let fd = unsafe { libc::memfd_create(c"vmm-mem".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: as above.
        let file = Arc::new(unsafe { File::from_raw_fd(fd) });
        let regions = [(0, 1 << 20)];
        let a = allocate_in(&regions, Some(&file)).unwrap();
        a.write_slice(&[7; 4096], GuestAddress(0x3000)).unwrap();
        let b = allocate_in(&regions, Some(&file)).unwrap();
        let mut buf = [0u8; 4096];
        b.read_slice(&mut buf, GuestAddress(0x3000)).unwrap();
        assert_eq!(buf, [7; 4096]);
        let err = allocate_in(&[(0, 2 << 20)], Some(&file)).unwrap_err();
        assert!(err.to_string().contains("another VM"), "{err}");
        let mut words = [0u64; 4];
        vmstate::file_data_pages(&file, 0, 1 << 20, &mut words).unwrap();
        assert_eq!(words[0], 1 << 3);
        punch_out(&file, 0, 1 << 20).unwrap();
        let mut words = [0u64; 4];
        vmstate::file_data_pages(&file, 0, 1 << 20, &mut words).unwrap();
        assert_eq!(words, [0; 4]);
        // (Reading a hole of shared memory allocates a zero page there.)
        b.read_slice(&mut buf, GuestAddress(0x3000)).unwrap();
        assert_eq!(buf, [0; 4096]);
    }

    #[test]
    fn impossible_sizes_are_refused() {
        let err = allocate(&[(0, 1 << 50)]).unwrap_err().to_string();
        assert!(err.contains("available"), "{err}");
    }
}
