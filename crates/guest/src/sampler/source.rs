//! Where a sampler reads a guest's status page: in another process's
//! memory (a Ferry VMM, with `process_vm_readv`) or in a file that backs
//! the guest's RAM (QEMU's `memory-backend-file` in /dev/shm).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::status::{self, PAGE_SIZE, Status, StatusError};

/// Reads bytes of one guest's status page.
pub trait StatusSource: Send + Sync {
    /// Fills `buf` from the page, starting `offset` bytes into it.
    fn read(&self, offset: usize, buf: &mut [u8]) -> io::Result<()>;
}

/// The page in another process: `addr` is where that process maps it.
#[derive(Debug, Clone, Copy)]
pub struct ProcessMemory {
    pid: libc::pid_t,
    addr: u64,
}

impl ProcessMemory {
    /// The status page at host address `addr` in process `pid` (what a
    /// Ferry VMM's API reports as `pid` and `status_page_addr`).
    pub fn new(pid: u32, addr: u64) -> ProcessMemory {
        ProcessMemory {
            pid: pid as libc::pid_t,
            addr,
        }
    }
}

impl StatusSource for ProcessMemory {
    fn read(&self, offset: usize, buf: &mut [u8]) -> io::Result<()> {
        if offset + buf.len() > PAGE_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "read beyond the status page",
            ));
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: (self.addr + offset as u64) as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` covers `buf`, which we own; the kernel checks the
        // remote range against the other process's mappings.
        let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
        match n {
            n if n == buf.len() as isize => Ok(()),
            n if n < 0 => Err(io::Error::last_os_error()),
            n => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read {n} of {} bytes of the status page", buf.len()),
            )),
        }
    }
}

/// The page in a file that backs the guest's RAM from guest-physical 0
/// (QEMU's `-object memory-backend-file,share=on,mem-path=FILE`), mapped
/// read-only and shared, so the guest's stores show at once.
#[derive(Debug)]
pub struct MappedFile {
    page: *const u8,
}

// SAFETY: the mapping is read-only and owned by this value alone; readers
// only load from it.
unsafe impl Send for MappedFile {}
// SAFETY: as above: shared reads of a read-only mapping.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Maps the status page of the RAM file `path`.
    pub fn open(path: &Path) -> io::Result<MappedFile> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len < status::GPA + PAGE_SIZE as u64 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} holds no status page ({len} bytes)", path.display()),
            ));
        }
        // SAFETY: a fresh read-only shared mapping of one page of the file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                status::GPA as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MappedFile { page: p.cast() })
    }
}

impl StatusSource for MappedFile {
    fn read(&self, offset: usize, buf: &mut [u8]) -> io::Result<()> {
        if offset + buf.len() > PAGE_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "read beyond the status page",
            ));
        }
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: inside the mapped page; volatile, the guest writes it.
            *b = unsafe { std::ptr::read_volatile(self.page.add(offset + i)) };
        }
        Ok(())
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`.
        unsafe { libc::munmap(self.page as *mut libc::c_void, PAGE_SIZE) };
    }
}

/// Why no status could be read from a source.
#[derive(Debug, thiserror::Error)]
pub enum ReadStatusError {
    #[error("cannot read the guest's status page: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Status(#[from] StatusError),
}

/// A consistent copy of the page's counters (retried while the guest writes).
pub fn read_status(src: &dyn StatusSource) -> Result<Status, ReadStatusError> {
    let mut page = [0u8; status::LEN];
    let mut last = StatusError::Torn(1);
    for _ in 0..1000 {
        src.read(0, &mut page)?;
        match status::decode(&page) {
            Ok(s) => return Ok(s),
            Err(e @ StatusError::Torn(_)) => last = e,
            Err(e) => return Err(e.into()),
        }
        std::hint::spin_loop();
    }
    Err(last.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_a_file() {
        let mut page = vec![0u8; PAGE_SIZE];
        let s = Status {
            version: status::VERSION,
            vcpus: 1,
            workload: "idle".into(),
            tsc_khz: 1000,
            ..Status::default()
        };
        page[..status::LEN].copy_from_slice(&status::encode(&s, 2));
        let mine = ProcessMemory::new(std::process::id(), page.as_ptr() as u64);
        assert_eq!(read_status(&mine).unwrap(), s);
        let mut four = [0u8; 4];
        assert!(mine.read(PAGE_SIZE - 2, &mut four).is_err());

        let dir = std::env::temp_dir().join(format!("guest-sampler-{}", std::process::id()));
        let mut ram = vec![0u8; status::GPA as usize];
        ram.extend(&page);
        std::fs::write(&dir, &ram).unwrap();
        let file = MappedFile::open(&dir).unwrap();
        assert_eq!(read_status(&file).unwrap(), s);
        std::fs::write(&dir, [0u8; 16]).unwrap();
        assert!(MappedFile::open(&dir).is_err());
        std::fs::remove_file(&dir).unwrap();
    }
}
