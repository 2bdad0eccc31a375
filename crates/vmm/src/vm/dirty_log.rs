//! Dirty-page tracking: KVM's dirty log per memory slot (with manual
//! re-protection where KVM offers it) plus the pages the VMM itself writes.

use kvm_bindings::{kvm_clear_dirty_log, kvm_enable_cap};
use kvm_ioctls::VmFd;
use vm_memory::{Bytes, GuestAddress};

use super::Vm;
use crate::Error;
use crate::memory::PAGE_SIZE;

const KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: u64 = 168;
const MANUAL_PROTECT_ENABLE: u64 = 1;
const INITIALLY_SET: u64 = 2;

vmm_sys_util::ioctl_iowr_nr!(
    KVM_CLEAR_DIRTY_LOG,
    kvm_bindings::KVMIO,
    0xc0,
    kvm_clear_dirty_log
);

/// The VM's dirty-tracking state.
pub(super) struct DirtyLog {
    enabled: bool,
    /// KVM_CLEAR_DIRTY_LOG is available: a harvest re-protects only the
    /// pages it reports.
    manual: bool,
    /// Pages the VMM itself wrote, per region, merged into every harvest.
    vmm_writes: Vec<Vec<u64>>,
}

impl DirtyLog {
    /// Tracking off, for a VM with `regions` memory slots; turns on manual
    /// re-protection if KVM has it.
    pub(super) fn new(fd: &VmFd, regions: usize) -> Result<DirtyLog, Error> {
        let manual_caps = fd.check_extension_raw(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) as u64;
        let manual = manual_caps & MANUAL_PROTECT_ENABLE != 0;
        if manual {
            let mut cap = kvm_enable_cap {
                cap: KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 as u32,
                ..Default::default()
            };
            // With INITIALLY_SET, enabling logging protects nothing: every
            // page reads dirty, and harvests re-protect a chunk at a time, so
            // the vCPUs never wait for the whole slot (its MMU lock) at once.
            cap.args[0] = manual_caps & (MANUAL_PROTECT_ENABLE | INITIALLY_SET);
            fd.enable_cap(&cap).map_err(Error::EnableDirtyLogProtect)?;
        }
        Ok(DirtyLog {
            enabled: false,
            manual,
            vmm_writes: vec![Vec::new(); regions],
        })
    }
}

impl Vm {
    /// Writes guest memory on behalf of the VMM; the pages count as dirty.
    pub fn write_memory(&self, gpa: u64, data: &[u8]) -> Result<(), Error> {
        self.memory
            .write_slice(data, GuestAddress(gpa))
            .map_err(|source| Error::WriteMemory { gpa, source })?;
        let mut d = self.dirty.lock().unwrap();
        if d.enabled && !data.is_empty() {
            let first = gpa / PAGE_SIZE;
            let last = (gpa + data.len() as u64 - 1) / PAGE_SIZE;
            for page in first..=last {
                if let Some((slot, idx)) = self.page_slot(page * PAGE_SIZE) {
                    let words = &mut d.vmm_writes[slot];
                    words[idx / 64] |= 1 << (idx % 64);
                }
            }
        }
        Ok(())
    }

    fn page_slot(&self, gpa: u64) -> Option<(usize, usize)> {
        self.config
            .regions
            .iter()
            .enumerate()
            .find(|(_, r)| gpa >= r.0 && gpa < r.0 + r.1)
            .map(|(i, r)| (i, ((gpa - r.0) / PAGE_SIZE) as usize))
    }

    /// Starts dirty-page tracking on every memory slot.
    pub fn start_dirty_log(&self) -> Result<(), Error> {
        let mut d = self.dirty.lock().unwrap();
        if d.enabled {
            return Ok(());
        }
        self.set_slots(true)?;
        for (i, r) in self.config.regions.iter().enumerate() {
            d.vmm_writes[i] = vec![0; (r.1 / PAGE_SIZE).div_ceil(64) as usize];
        }
        d.enabled = true;
        Ok(())
    }

    /// Stops dirty-page tracking.
    pub fn stop_dirty_log(&self) -> Result<(), Error> {
        let mut d = self.dirty.lock().unwrap();
        if d.enabled {
            self.set_slots(false)?;
            d.enabled = false;
        }
        Ok(())
    }

    /// ORs into `out[region]` every page written since the previous harvest
    /// (by the guest or the VMM) and re-arms tracking for those pages.
    /// Bit `i` of region `r` is the page at `regions[r].0 + i * 4096`.
    pub fn harvest_dirty(&self, out: &mut [Vec<u64>]) -> Result<(), Error> {
        let mut d = self.dirty.lock().unwrap();
        if !d.enabled {
            return Err(Error::DirtyLogDisabled);
        }
        for (slot, r) in self.config.regions.iter().enumerate() {
            let pages = r.1 / PAGE_SIZE;
            let mut bitmap = self
                .fd
                .get_dirty_log(slot as u32, r.1 as usize)
                .map_err(Error::GetDirtyLog)?;
            if d.manual {
                self.clear_dirty(slot as u32, pages, &mut bitmap)?;
            }
            let dst = &mut out[slot];
            dst.resize(bitmap.len(), 0);
            let own = &mut d.vmm_writes[slot];
            for (i, w) in bitmap.iter().enumerate() {
                dst[i] |= w | own.get(i).copied().unwrap_or(0);
            }
            own.iter_mut().for_each(|w| *w = 0);
        }
        Ok(())
    }

    /// Re-protects the pages set in `bitmap` (of a slot of `pages` pages),
    /// a chunk per call: KVM holds its MMU lock through one call, and a
    /// kernel without preemption lets no other thread on this CPU run
    /// until the call returns, the downtime sampler's included.
    fn clear_dirty(&self, slot: u32, pages: u64, bitmap: &mut [u64]) -> Result<(), Error> {
        for (i, chunk) in bitmap.chunks_mut(CLEAR_CHUNK_WORDS).enumerate() {
            if chunk.iter().all(|&w| w == 0) {
                continue;
            }
            let first_page = (i * CLEAR_CHUNK_WORDS * 64) as u64;
            let mut clear = kvm_clear_dirty_log {
                slot,
                num_pages: (pages - first_page).min(chunk.len() as u64 * 64) as u32,
                first_page,
                ..Default::default()
            };
            clear.__bindgen_anon_1.dirty_bitmap = chunk.as_mut_ptr().cast();
            // SAFETY: the chunk covers `num_pages` bits from `first_page`,
            // a multiple of 64 as KVM requires.
            let ret = unsafe {
                vmm_sys_util::ioctl::ioctl_with_ref(&self.fd, KVM_CLEAR_DIRTY_LOG(), &clear)
            };
            if ret < 0 {
                return Err(Error::ClearDirtyLog(kvm_ioctls::Error::last()));
            }
        }
        Ok(())
    }
}

/// Bitmap words re-protected per KVM_CLEAR_DIRTY_LOG call (4096 pages).
const CLEAR_CHUNK_WORDS: usize = 64;
