//! Which pages of guest memory may hold data. Memory never written reads
//! as zero, so snapshots and the first migration round skip it unread
//! (reading it would fault in the zero page, costing more than a copy).
//!
//! Two sources, by how the memory is backed:
//! - anonymous private memory ([`resident_pages`]): the process's page
//!   tables, /proc/self/pagemap. Not mincore(2): mincore reports only pages
//!   in RAM, so a page swapped out would be taken for an untouched one and
//!   its data silently replaced by zeros; pagemap reports swapped pages too.
//! - a shared file, tmpfs or memfd ([`file_data_pages`]): the file's own
//!   extents (lseek SEEK_DATA/SEEK_HOLE). pagemap does not hold there: a
//!   page the file holds is absent from this process's page tables until
//!   the process touches it (a restarted process has touched none), and a
//!   swapped-out shared page shows in no page table at all. tmpfs counts
//!   pages in swap as data; a hole reads as zero.

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

/// Sets bit `i % 64` of `words[i / 64]` for every page `i` of the `len`
/// bytes of `file` from `offset` that the file holds data for (in RAM or
/// in swap), leaving other bits as they are: the rest are holes and read
/// as zero. `offset` and `len` must be multiples of 4 KiB and `words` must
/// hold a bit per page. Only the file's extents are looked up, nothing is
/// read; the file position is left undefined. A file system without
/// SEEK_DATA reports everything as data, which only widens the answer.
pub fn file_data_pages(file: &File, offset: u64, len: u64, words: &mut [u64]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    let page = PAGE_SIZE as u64;
    if !offset.is_multiple_of(page) || !len.is_multiple_of(page) {
        return Err(invalid("the range is not aligned to 4 KiB pages"));
    }
    let pages = (len / page) as usize;
    if words.len() < pages.div_ceil(64) {
        return Err(invalid("the bitmap is smaller than the range"));
    }
    let end = offset
        .checked_add(len)
        .filter(|&e| i64::try_from(e).is_ok())
        .ok_or_else(|| invalid("the range overflows"))?;
    let fd = file.as_raw_fd();
    let seek = |at: u64, whence| {
        // SAFETY: lseek on a descriptor we borrow; it moves only the
        // file position, which nothing here relies on.
        let r = unsafe { libc::lseek(fd, at as libc::off_t, whence) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as u64)
        }
    };
    let mut at = offset;
    while at < end {
        let data = match seek(at, libc::SEEK_DATA) {
            Ok(d) => d,
            // No data at or after `at`.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) => return Err(e),
        };
        if data >= end {
            break;
        }
        let hole = seek(data, libc::SEEK_HOLE)?.min(end);
        let first = ((data - offset) / page) as usize;
        let last = (hole - offset).div_ceil(page) as usize;
        for i in first..last {
            words[i / 64] |= 1 << (i % 64);
        }
        at = hole.max(data + 1);
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

    /// A memfd (shared memory, as tmpfs): pages written, and pages written
    /// through a shared mapping that was then unmapped, are data; the
    /// rest are holes.
    #[test]
    fn a_shared_file_reports_its_data_pages_mapped_or_not() {
        use std::os::fd::FromRawFd;
        use std::os::unix::fs::FileExt;
        // SAFETY: a fresh memfd; the File owns the descriptor.
        let fd = unsafe { libc::memfd_create(c"resident-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: `fd` is ours and valid.
        let file = unsafe { File::from_raw_fd(fd) };
        let pages = 300;
        file.set_len((pages * PAGE_SIZE) as u64).unwrap();
        for i in [1usize, 2, 130] {
            file.write_all_at(&[9], (i * PAGE_SIZE + 7) as u64).unwrap();
        }
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a shared mapping of our own file, unmapped below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    pages * PAGE_SIZE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            // SAFETY: page 299 is inside the mapping.
            unsafe { p.cast::<u8>().add(299 * PAGE_SIZE).write_volatile(1) };
            // SAFETY: unmaps what was mapped above.
            unsafe { libc::munmap(p, pages * PAGE_SIZE) };
        }
        let mut words = vec![0u64; 5];
        file_data_pages(&file, 0, (pages * PAGE_SIZE) as u64, &mut words).unwrap();
        let marked: Vec<usize> = (0..pages)
            .filter(|&i| words[i / 64] & (1 << (i % 64)) != 0)
            .collect();
        assert_eq!(marked, vec![1, 2, 130, 299]);
        // A range from an offset: bits count from its start.
        let mut words = vec![0u64; 1];
        file_data_pages(
            &file,
            (128 * PAGE_SIZE) as u64,
            (8 * PAGE_SIZE) as u64,
            &mut words,
        )
        .unwrap();
        assert_eq!(words[0], 1 << 2);
        assert!(file_data_pages(&file, 100, PAGE_SIZE as u64, &mut words).is_err());
        assert!(file_data_pages(&file, 0, (pages * PAGE_SIZE) as u64, &mut words).is_err());
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
