//! Guest memory that fills in while the VM runs (post-copy on the
//! destination): pages still to come are dropped (from the anonymous
//! mapping, or punched out of the shared file guest RAM lives in) and guest RAM is registered with userfaultfd for missing pages, so the
//! first touch of a page that is not present (by a vCPU, by KVM itself, or
//! by a VMM thread) waits until the page is installed with UFFDIO_COPY or
//! UFFDIO_ZEROPAGE. Works the same on hardware KVM: KVM's own accesses
//! fault through the host page tables like any other.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use userfaultfd::{Event, Uffd, UffdBuilder};
use vm_memory::GuestMemoryMmap;

use crate::Error;
use crate::memory::{HostRegion, PAGE_SIZE, host_regions};

/// Guest RAM under userfaultfd. Shared by the thread that waits for faults
/// and the one that installs pages.
pub struct Userfault {
    uffd: Uffd,
    regions: Vec<HostRegion>,
    registered: AtomicBool,
}

/// Whether this process may intercept guest memory faults, KVM's
/// included (userfaultfd without UFFD_USER_MODE_ONLY needs CAP_SYS_PTRACE
/// or vm.unprivileged_userfaultfd=1). A destination that cannot says so at
/// Accept, and the source never switches to post-copy.
pub fn available() -> bool {
    builder().create().is_ok()
}

/// Whether guest RAM in `file` can take post-copy: userfaultfd intercepts
/// missing pages of anonymous and shared memory (tmpfs, memfd), not of
/// files on disk.
pub fn backs_postcopy(file: &std::fs::File) -> bool {
    // SAFETY: fstatfs fills the struct for a descriptor we borrow.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) };
    rc == 0 && st.f_type == libc::TMPFS_MAGIC
}

fn builder() -> UffdBuilder {
    let mut b = UffdBuilder::new();
    b.close_on_exec(true)
        .non_blocking(true)
        // KVM's accesses to guest memory are kernel-mode faults.
        .user_mode_only(false);
    b
}

/// The host address of `[gpa, gpa + len)`, which must lie in one region.
fn host_addr(regions: &[HostRegion], gpa: u64, len: u64) -> Result<*mut u8, Error> {
    regions
        .iter()
        .find(|r| gpa >= r.gpa && gpa.saturating_add(len) <= r.gpa + r.len)
        // SAFETY: the offset stays inside the region's mapping.
        .map(|r| unsafe { r.host.add((gpa - r.gpa) as usize) })
        .ok_or(Error::OutsideMemory { gpa, len })
}

/// Drops the content of the `(gpa, len)` ranges of guest RAM: they read as
/// zero (or fault, under userfaultfd) until written again. In a shared
/// file the pages are removed from the file itself: unmapping them alone
/// would keep their content.
pub(crate) fn discard(regions: &[HostRegion], ranges: &[(u64, u64)]) -> Result<(), Error> {
    let mut iov = Vec::with_capacity(ranges.len());
    let mut shared = Vec::new();
    for &(gpa, len) in ranges {
        let host = host_addr(regions, gpa, len)?;
        let v = libc::iovec {
            iov_base: host.cast(),
            iov_len: len as usize,
        };
        match regions
            .iter()
            .any(|r| r.shared && r.gpa <= gpa && gpa < r.gpa + r.len)
        {
            true => shared.push(v),
            false => iov.push(v),
        }
    }
    drop_pages(&iov).map_err(Error::DropPages)?;
    for v in shared {
        // SAFETY: a range of our own shared mapping; its pages read as
        // missing afterwards, which is the point.
        if unsafe { libc::madvise(v.iov_base, v.iov_len, libc::MADV_REMOVE) } != 0 {
            return Err(Error::DropPages(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// The parts of `ranges` whose pages are present, as ranges. mincore
/// reports a shared file's pages, which is what a missing-page fault there
/// looks at. It costs per page asked (a page-cache lookup each for shared
/// memory), so a region whose ranges are sparse in their span is asked
/// range by range, a dense one in one call over the span.
fn resident_parts(regions: &[HostRegion], ranges: &[(u64, u64)]) -> Result<Vec<(u64, u64)>, Error> {
    for &(gpa, len) in ranges {
        host_addr(regions, gpa, len)?;
    }
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut vec = Vec::new();
    for r in regions {
        let inside: Vec<(u64, u64)> = ranges
            .iter()
            .copied()
            .filter(|&(gpa, len)| gpa >= r.gpa && gpa + len <= r.gpa + r.len)
            .collect();
        let (Some(lo), Some(hi)) = (
            inside.iter().map(|&(g, _)| g).min(),
            inside.iter().map(|&(g, l)| g + l).max(),
        ) else {
            continue;
        };
        let asked: u64 = inside.iter().map(|&(_, l)| l / PAGE_SIZE).sum();
        // A call costs about as much as ten pages looked up.
        let sparse = asked + 10 * (inside.len() as u64) < (hi - lo) / PAGE_SIZE;
        let whole = [(lo, hi - lo)];
        let spans: &[(u64, u64)] = if sparse { &inside } else { &whole };
        for &(from, len) in spans {
            vec.clear();
            vec.resize((len / PAGE_SIZE) as usize, 0u8);
            // SAFETY: [from, from + len) lies inside the region's mapping;
            // `vec` has a byte per page of it.
            let rc = unsafe {
                libc::mincore(
                    r.host.add((from - r.gpa) as usize).cast(),
                    len as usize,
                    vec.as_mut_ptr(),
                )
            };
            if rc != 0 {
                return Err(Error::DropPages(std::io::Error::last_os_error()));
            }
            let asked_here: &[(u64, u64)] = if sparse { &[(from, len)] } else { &inside };
            for &(gpa, l) in asked_here {
                for page in (gpa..gpa + l).step_by(PAGE_SIZE as usize) {
                    if vec[((page - from) / PAGE_SIZE) as usize] & 1 == 0 {
                        continue;
                    }
                    match out.last_mut() {
                        Some((g, l)) if *g + *l == page => *l += PAGE_SIZE,
                        _ => out.push((page, PAGE_SIZE)),
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Ranges per process_madvise call (the kernel's UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// Drops `ranges` (inside private anonymous mappings this VM owns): one
/// process_madvise call per [`IOV_MAX`] ranges, so the kernel flushes the
/// TLB once per batch, not once per range (thousands of scattered pages at
/// a hybrid switch: ~3 us each one by one); madvise per range on kernels
/// that refuse MADV_DONTNEED there (older than this machine's 6.18).
fn drop_pages(ranges: &[libc::iovec]) -> std::io::Result<()> {
    // SAFETY: opens a pidfd for this process; closed below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) } as libc::c_int;
    let mut rest = ranges;
    while pidfd >= 0 && !rest.is_empty() {
        let n = rest.len().min(IOV_MAX);
        let want: usize = rest[..n].iter().map(|v| v.iov_len).sum();
        // SAFETY: `n` iovecs describing ranges of our own mappings.
        let done = unsafe {
            libc::syscall(
                libc::SYS_process_madvise,
                pidfd,
                rest.as_ptr(),
                n,
                libc::MADV_DONTNEED,
                0,
            )
        };
        if done < 0 || done as usize != want {
            // Not supported here, or cut short: the rest one by one.
            break;
        }
        rest = &rest[n..];
    }
    if pidfd >= 0 {
        // SAFETY: the pidfd opened above.
        unsafe { libc::close(pidfd) };
    }
    for v in rest {
        // SAFETY: as above; dropping only makes the pages read as missing.
        if unsafe { libc::madvise(v.iov_base, v.iov_len, libc::MADV_DONTNEED) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn uffd_err(op: &'static str) -> impl FnOnce(userfaultfd::Error) -> Error {
    move |source| Error::Userfault { op, source }
}

impl Userfault {
    /// Drops the `(gpa, len)` ranges of `memory` (their content is stale)
    /// and registers all of guest RAM for missing-page faults. Call with
    /// the vCPUs stopped. With `resident_only`, only the pages of `drop`
    /// that are present are dropped (most were discarded already, see
    /// [`discard`]); those absent fault from now on anyway.
    pub fn start(
        memory: &GuestMemoryMmap,
        drop: &[(u64, u64)],
        resident_only: bool,
    ) -> Result<Userfault, Error> {
        let regions = host_regions(memory);
        let uffd = builder().create().map_err(uffd_err("create"))?;
        let uf = Userfault {
            uffd,
            regions,
            registered: AtomicBool::new(false),
        };
        // Registered first: a page dropped before it was would read as a
        // fresh zero page to anyone touching it in between (a reader of
        // the status page, say), and its real content would then never
        // be installed (UFFDIO_COPY finds the page present).
        for r in &uf.regions {
            uf.uffd
                .register(r.host.cast(), r.len as usize)
                .map_err(uffd_err("register"))?;
        }
        // Residency is read after registering: from then on nothing can
        // make an absent page present behind our back.
        let t0 = std::time::Instant::now();
        let resident;
        let drop = if resident_only {
            resident = resident_parts(&uf.regions, drop)?;
            &resident[..]
        } else {
            drop
        };
        let t1 = t0.elapsed();
        discard(&uf.regions, drop)?;
        tracing::debug!(ranges = drop.len(), residency = ?t1, took = ?t0.elapsed(), "post-copy drop");
        uf.registered.store(true, Ordering::SeqCst);
        Ok(uf)
    }

    /// The host address of `[gpa, gpa + len)`, which must lie in one region.
    fn host(&self, gpa: u64, len: u64) -> Result<*mut u8, Error> {
        host_addr(&self.regions, gpa, len)
    }

    /// The guest-physical page holding host address `addr`.
    fn gpa_of(&self, addr: usize) -> Option<u64> {
        self.regions.iter().find_map(|r| {
            let start = r.host as usize;
            (addr >= start && addr < start + r.len as usize)
                .then(|| r.gpa + ((addr - start) as u64 & !(PAGE_SIZE - 1)))
        })
    }

    /// Waits up to `timeout` for a touch of a missing page; its gpa.
    pub fn wait_fault(&self, timeout: Duration) -> Result<Option<u64>, Error> {
        let mut pfd = libc::pollfd {
            fd: self.uffd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one pollfd we own.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(Error::Poll(e));
        }
        if n == 0 {
            return Ok(None);
        }
        match self.uffd.read_event().map_err(uffd_err("read"))? {
            Some(Event::Pagefault { addr, .. }) => Ok(self.gpa_of(addr as usize)),
            _ => Ok(None),
        }
    }

    /// Installs whole pages at `gpa` and wakes their waiters; pages already
    /// present stay as they are.
    pub fn install(&self, gpa: u64, data: &[u8]) -> Result<(), Error> {
        let len = data.len() as u64;
        let host = self.host(gpa, len)?;
        let mut done = 0usize;
        while done < data.len() {
            // SAFETY: source and destination ranges are valid for the length;
            // the destination is registered guest memory.
            let r = unsafe {
                self.uffd.copy(
                    data[done..].as_ptr().cast(),
                    host.add(done).cast(),
                    data.len() - done,
                    true,
                )
            };
            match r {
                Ok(n) => done += n,
                Err(userfaultfd::Error::PartiallyCopied(n)) if n > 0 => done += n,
                Err(userfaultfd::Error::CopyFailed(e)) if e as i32 == libc::EEXIST => {
                    // Some page of the rest is present: go page by page.
                    return self.install_each(host, &data[done..], done);
                }
                Err(e) => return Err(uffd_err("copy")(e)),
            }
        }
        Ok(())
    }

    fn install_each(&self, host: *mut u8, rest: &[u8], at: usize) -> Result<(), Error> {
        let page = PAGE_SIZE as usize;
        for (k, chunk) in rest.chunks(page).enumerate() {
            // SAFETY: as in `install`, one page at a time.
            let r = unsafe {
                self.uffd.copy(
                    chunk.as_ptr().cast(),
                    host.add(at + k * page).cast(),
                    chunk.len(),
                    true,
                )
            };
            match r {
                Ok(_) => {}
                Err(userfaultfd::Error::CopyFailed(e)) if e as i32 == libc::EEXIST => {}
                Err(e) => return Err(uffd_err("copy")(e)),
            }
        }
        Ok(())
    }

    /// Installs `pages` zero pages at `gpa`; present ones stay as they are.
    pub fn install_zero(&self, gpa: u64, pages: u64) -> Result<(), Error> {
        let host = self.host(gpa, pages * PAGE_SIZE)?;
        let page = PAGE_SIZE as usize;
        // SAFETY: the range is registered guest memory.
        let all = unsafe { self.uffd.zeropage(host.cast(), pages as usize * page, true) };
        match all {
            Ok(_) => Ok(()),
            Err(userfaultfd::Error::ZeropageFailed(e)) if e as i32 == libc::EEXIST => {
                for k in 0..pages as usize {
                    // SAFETY: one page of the same range.
                    let r = unsafe { self.uffd.zeropage(host.add(k * page).cast(), page, true) };
                    match r {
                        Ok(_) => {}
                        Err(userfaultfd::Error::ZeropageFailed(e)) if e as i32 == libc::EEXIST => {}
                        Err(e) => return Err(uffd_err("zeropage")(e)),
                    }
                }
                Ok(())
            }
            Err(e) => Err(uffd_err("zeropage")(e)),
        }
    }

    /// Whether the page at `gpa` is present (installed or written).
    pub fn is_present(&self, gpa: u64) -> Result<bool, Error> {
        let host = self.host(gpa & !(PAGE_SIZE - 1), PAGE_SIZE)?;
        let mut v = 0u8;
        // SAFETY: one page-aligned page of our mapping, one result byte.
        let r = unsafe { libc::mincore(host.cast(), PAGE_SIZE as usize, &mut v) };
        if r != 0 {
            return Err(Error::Poll(std::io::Error::last_os_error()));
        }
        Ok(v & 1 != 0)
    }

    /// Every page arrived: unregister (which also wakes any waiter), so
    /// that untouched pages read as zero from now on.
    pub fn finish(&self) -> Result<(), Error> {
        if !self.registered.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        for r in &self.regions {
            self.uffd
                .unregister(r.host.cast(), r.len as usize)
                .map_err(uffd_err("unregister"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use vm_memory::{Bytes, GuestAddress};

    /// Faults from another thread reach `wait_fault`; installs wake them.
    #[test]
    fn a_touch_of_a_dropped_page_waits_for_its_install() {
        assert!(available(), "userfaultfd is needed here (root)");
        let mem = crate::memory::allocate(&[(0, 1 << 20)]).unwrap();
        mem.write_slice(&[7u8; 8192], GuestAddress(0)).unwrap();
        let uf = Arc::new(Userfault::start(&mem, &[(0x1000, 0x1000)], false).unwrap());
        assert!(uf.is_present(0).unwrap());
        assert!(!uf.is_present(0x1000).unwrap());
        let reader = {
            let mem = mem.clone();
            std::thread::spawn(move || {
                let mut b = [0u8; 2];
                mem.read_slice(&mut b, GuestAddress(0x1ffe)).unwrap();
                let z: u8 = mem.read_obj(GuestAddress(0x5000)).unwrap();
                (b, z)
            })
        };
        let gpa = loop {
            if let Some(g) = uf.wait_fault(Duration::from_secs(5)).unwrap() {
                break g;
            }
        };
        assert_eq!(gpa, 0x1000);
        uf.install(0x1000, &[9u8; 4096]).unwrap();
        // Again: EEXIST is not an error.
        uf.install(0x1000, &[1u8; 4096]).unwrap();
        let gpa = uf.wait_fault(Duration::from_secs(5)).unwrap();
        assert_eq!(gpa, Some(0x5000));
        uf.install_zero(0x5000, 1).unwrap();
        assert_eq!(reader.join().unwrap(), ([9, 9], 0));
        uf.finish().unwrap();
        let z: u8 = mem.read_obj(GuestAddress(0x9000)).unwrap();
        assert_eq!(z, 0);
        assert!(matches!(
            uf.install(1 << 30, &[0; 4096]),
            Err(Error::OutsideMemory { .. })
        ));
    }

    /// Pages discarded earlier stay absent; present ones of the set are
    /// dropped; pages outside it are kept, also with `resident_only`.
    #[test]
    fn resident_only_drops_what_is_present_and_keeps_the_rest() {
        let mem = crate::memory::allocate(&[(0, 1 << 20)]).unwrap();
        mem.write_slice(&[7u8; 4 * 4096], GuestAddress(0)).unwrap();
        let regions = host_regions(&mem);
        // Pages 1 and 2 are stale; the destination forgot page 2 already.
        discard(&regions, &[(0x2000, 0x1000)]).unwrap();
        let parts = resident_parts(&regions, &[(0x1000, 0x2000), (0x9000, 0x1000)]).unwrap();
        assert_eq!(parts, vec![(0x1000, 0x1000)]);
        // Sparse in their span: asked range by range, with the same answer.
        mem.write_slice(&[7u8; 4096], GuestAddress(0xc0000))
            .unwrap();
        let sparse = [(0x1000, 0x2000), (0x80000, 0x1000), (0xc0000, 0x2000)];
        let parts = resident_parts(&regions, &sparse).unwrap();
        assert_eq!(parts, vec![(0x1000, 0x1000), (0xc0000, 0x1000)]);
        let uf = Userfault::start(&mem, &[(0x1000, 0x2000)], true).unwrap();
        assert!(uf.is_present(0).unwrap());
        assert!(uf.is_present(0x3000).unwrap());
        assert!(!uf.is_present(0x1000).unwrap());
        assert!(!uf.is_present(0x2000).unwrap());
        uf.finish().unwrap();
        assert!(matches!(
            discard(&regions, &[(1 << 30, 0x1000)]),
            Err(Error::OutsideMemory { .. })
        ));
    }

    /// Guest RAM in a shared file (a VM that may migrate on in post-copy
    /// keeps it there): a dropped page leaves the file, so its first touch
    /// faults, and an installed page lands in the file.
    #[test]
    fn a_page_dropped_from_a_shared_file_faults_and_is_installed_there() {
        use std::os::fd::FromRawFd;
        use std::os::unix::fs::FileExt;
        // SAFETY: creates a memfd that the File below owns.
        let fd = unsafe { libc::memfd_create(c"guest".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a new descriptor nobody else owns.
        let file = Arc::new(unsafe { std::fs::File::from_raw_fd(fd) });
        assert!(backs_postcopy(&file));
        let on_disk = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        assert!(!backs_postcopy(&on_disk));
        let mem = crate::memory::allocate_in(&[(0, 1 << 20)], Some(&file)).unwrap();
        mem.write_slice(&[7u8; 3 * 4096], GuestAddress(0)).unwrap();
        assert!(host_regions(&mem)[0].shared);
        let uf = Arc::new(Userfault::start(&mem, &[(0x1000, 0x1000)], true).unwrap());
        assert!(uf.is_present(0).unwrap());
        assert!(!uf.is_present(0x1000).unwrap());
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, 0x1000).unwrap();
        assert_eq!(b, [0], "the page is gone from the file too");
        let reader = {
            let mem = mem.clone();
            std::thread::spawn(move || mem.read_obj::<u8>(GuestAddress(0x1800)).unwrap())
        };
        let gpa = loop {
            if let Some(g) = uf.wait_fault(Duration::from_secs(5)).unwrap() {
                break g;
            }
        };
        assert_eq!(gpa, 0x1000);
        uf.install(0x1000, &[9u8; 4096]).unwrap();
        assert_eq!(reader.join().unwrap(), 9);
        file.read_exact_at(&mut b, 0x1000).unwrap();
        assert_eq!(b, [9], "the installed page is the file's");
        file.read_exact_at(&mut b, 0x2000).unwrap();
        assert_eq!(b, [7], "pages outside the set are kept");
        uf.finish().unwrap();
    }
}
