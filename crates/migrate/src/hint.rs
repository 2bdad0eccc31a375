//! Which guest pages may hold data, from the kernel's page tables: a page of
//! anonymous memory that was never touched is neither present nor swapped
//! and reads as zero, so the first pass over memory can skip it unread
//! (reading it would fault in the zero page, which costs more than the copy).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};

use crate::bitmap::{DirtyBitmap, PAGE_SIZE};

const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
/// pagemap entries read per system call.
const BATCH: usize = 4096;

/// Marks in `into` every page of `memory` that is present or swapped out
/// according to /proc/self/pagemap (so may hold non-zero data). Pages left
/// clear were never touched and read as zero. `into` must cover `memory`'s
/// regions in order (the layout built from the same config). Usable as
/// [`crate::SourceVm::nonzero_hint`] for anonymous guest memory; host pages
/// must be 4 KiB.
pub fn resident_pages(memory: &GuestMemoryMmap, into: &mut DirtyBitmap) -> io::Result<()> {
    let pagemap = File::open("/proc/self/pagemap")?;
    let layout = into.layout().clone();
    let mut entries = vec![0u8; BATCH * 8];
    for (region, r) in memory.iter().zip(layout.regions()) {
        if region.len() != r.pages * PAGE_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "guest memory regions do not match the bitmap's layout",
            ));
        }
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| io::Error::other(e.to_string()))? as u64;
        let mut page = 0u64;
        while page < r.pages {
            let n = ((r.pages - page) as usize).min(BATCH);
            let vpn = host / PAGE_SIZE + page;
            let buf = &mut entries[..n * 8];
            pagemap.read_exact_at(buf, vpn * 8)?;
            for (i, e) in buf.chunks_exact(8).enumerate() {
                let e = u64::from_le_bytes(e.try_into().expect("8 bytes"));
                if e & (PRESENT | SWAPPED) != 0 {
                    into.set(r.first_index + page + i as u64);
                }
            }
            page += n as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitmap::PageLayout;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn touched_pages_are_marked() {
        let regions = [(0u64, 8u64 << 20), (1u64 << 32, 4u64 << 20)];
        let ranges: Vec<_> = regions
            .iter()
            .map(|&(s, l)| (GuestAddress(s), l as usize))
            .collect();
        let mem = GuestMemoryMmap::from_ranges(&ranges).unwrap();
        let layout = PageLayout::new(&regions).unwrap();
        let touched = [0u64, 5, 4096 + 1000, (1 << 32) + 7 * 4096];
        for &g in &touched {
            mem.write_slice(&[1], GuestAddress(g)).unwrap();
        }
        let mut hint = DirtyBitmap::new(&layout);
        resident_pages(&mem, &mut hint).unwrap();
        for &g in &touched {
            assert!(hint.get(layout.index_of(g).unwrap()), "{g:#x}");
        }
        // Untouched memory is not reported (unless the kernel backs every
        // anonymous mapping with huge pages, which only widens the hint).
        let thp_always = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| s.contains("[always]"));
        if !thp_always {
            assert!(hint.count() < layout.pages() / 2, "{}", hint.count());
        }
        let bad = DirtyBitmap::new(&PageLayout::new(&[(0, 4096)]).unwrap());
        let mut bad = bad;
        assert!(resident_pages(&mem, &mut bad).is_err());
    }
}
