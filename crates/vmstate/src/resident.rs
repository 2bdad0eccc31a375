//! Which pages of a host mapping may hold data, from the kernel's page
//! tables. Anonymous memory never touched is neither present nor swapped
//! and reads as zero, so snapshots and the first migration round skip it
//! unread (reading it would fault in the zero page, costing more than a copy).
//!
//! /proc/self/pagemap, not mincore(2): mincore reports only pages in RAM,
//! so a page swapped out would be taken for an untouched one and its data
//! silently replaced by zeros. pagemap reports swapped pages as well.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::record::PAGE_SIZE;

/// pagemap: the page is in RAM.
const PRESENT: u64 = 1 << 63;
/// pagemap: the page is in swap.
const SWAPPED: u64 = 1 << 62;
/// pagemap entries read per system call.
const BATCH: usize = 8192;

/// Sets bit `i % 64` of `words[i / 64]` for every page `i` of the mapping
/// of `len` bytes at `host` that the kernel has backed (present in RAM or
/// swapped out), leaving other bits as they are. Pages left clear were never
/// touched and read as zero. `host` and `len` must be multiples of 4 KiB
/// (the host's page size too) and `words` must hold a bit per page; the
/// mapping is only looked up, never read.
pub fn resident_pages(host: *const u8, len: usize, words: &mut [u64]) -> io::Result<()> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    if !(host as usize).is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
        return Err(invalid("the mapping is not aligned to 4 KiB pages"));
    }
    let pages = len / PAGE_SIZE;
    if words.len() < pages.div_ceil(64) {
        return Err(invalid("the bitmap is smaller than the mapping"));
    }
    let pagemap = File::open("/proc/self/pagemap")?;
    let first = (host as usize / PAGE_SIZE) as u64;
    let mut buf = vec![0u8; BATCH.min(pages) * 8];
    let mut page = 0;
    while page < pages {
        let n = BATCH.min(pages - page);
        let entries = &mut buf[..n * 8];
        pagemap.read_exact_at(entries, (first + page as u64) * 8)?;
        for (j, e) in entries.chunks_exact(8).enumerate() {
            let e = u64::from_le_bytes(e.try_into().expect("8 bytes"));
            if e & (PRESENT | SWAPPED) != 0 {
                let i = page + j;
                words[i / 64] |= 1 << (i % 64);
            }
        }
        page += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An anonymous private mapping, unmapped on drop.
    struct Mapping(*mut u8, usize);

    impl Mapping {
        fn new(len: usize) -> Mapping {
            // SAFETY: a fresh anonymous mapping; no existing memory is affected.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            Mapping(p.cast(), len)
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly what `new` mapped.
            unsafe { libc::munmap(self.0.cast(), self.1) };
        }
    }

    #[test]
    fn touched_pages_are_marked_and_others_left_alone() {
        let pages = 200;
        let m = Mapping::new(pages * PAGE_SIZE);
        let touched = [0usize, 3, 64, 199];
        for &i in &touched {
            // SAFETY: page `i` is inside the mapping.
            unsafe { m.0.add(i * PAGE_SIZE + 5).write_volatile(1) };
        }
        let mut words = vec![0u64; 4];
        words[3] = 1 << 63; // beyond the mapping: kept
        resident_pages(m.0, pages * PAGE_SIZE, &mut words).unwrap();
        for &i in &touched {
            assert!(words[i / 64] & (1 << (i % 64)) != 0, "page {i}");
        }
        assert!(words[3] & (1 << 63) != 0);
        // Untouched memory is not reported (unless the kernel backs every
        // anonymous mapping with huge pages, which only widens the answer).
        let thp_always = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| s.contains("[always]"));
        let marked: u32 = words.iter().map(|w| w.count_ones()).sum();
        if !thp_always {
            assert_eq!(marked, touched.len() as u32 + 1, "{words:x?}");
        }
    }

    #[test]
    fn bad_arguments_are_refused() {
        let m = Mapping::new(8 * PAGE_SIZE);
        let mut words = vec![0u64; 1];
        // SAFETY: only an address is formed; nothing is read.
        let odd = unsafe { m.0.add(100) };
        assert!(resident_pages(odd, PAGE_SIZE, &mut words).is_err());
        assert!(resident_pages(m.0, 100, &mut words).is_err());
        assert!(resident_pages(m.0, 8 * PAGE_SIZE, &mut []).is_err());
        resident_pages(m.0, 8 * PAGE_SIZE, &mut words).unwrap();
    }
}
