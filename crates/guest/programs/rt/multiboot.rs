//! What the Multiboot v1 loader hands over: the command line and the memory
//! map, copied out of its memory before anything else is placed there.

use super::{Global, rd};

pub(super) const MB_BOOT_MAGIC: u32 = 0x2BAD_B002;
const MAX_REGIONS: usize = 64;

/// What the boot loader told us, copied out of its memory.
pub struct Boot {
    cmdline: [u8; 4096],
    cmdline_len: usize,
    /// Available RAM regions (base, length).
    regions: [(u64, u64); MAX_REGIONS],
    nregions: usize,
}

impl Boot {
    pub fn cmdline(&self) -> &str {
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }
    pub fn regions(&self) -> &[(u64, u64)] {
        &self.regions[..self.nregions]
    }
    /// Total available RAM in bytes.
    pub fn ram(&self) -> u64 {
        self.regions().iter().map(|r| r.1).sum()
    }
}

pub(super) static BOOT: Global<Boot> = Global::new(Boot {
    cmdline: [0; 4096],
    cmdline_len: 0,
    regions: [(0, 0); MAX_REGIONS],
    nregions: 0,
});

/// Copies the command line and the memory map out of the Multiboot info.
pub(super) fn multiboot_read(info: u64, boot: &mut Boot) -> Result<(), &'static str> {
    let flags: u32 = unsafe { rd(info) };
    if flags & (1 << 2) != 0 {
        let mut p: u32 = unsafe { rd(info + 16) };
        while p != 0 && boot.cmdline_len < boot.cmdline.len() {
            let b: u8 = unsafe { rd(u64::from(p)) };
            if b == 0 {
                break;
            }
            boot.cmdline[boot.cmdline_len] = b;
            boot.cmdline_len += 1;
            p += 1;
        }
    }
    if flags & (1 << 6) != 0 {
        let len: u32 = unsafe { rd(info + 44) };
        let addr: u32 = unsafe { rd(info + 48) };
        let (mut p, end) = (u64::from(addr), u64::from(addr) + u64::from(len));
        while p + 24 <= end && boot.nregions < MAX_REGIONS {
            let size: u32 = unsafe { rd(p) };
            let base: u64 = unsafe { rd(p + 4) };
            let length: u64 = unsafe { rd(p + 12) };
            let kind: u32 = unsafe { rd(p + 20) };
            if kind == 1 && length > 0 {
                boot.regions[boot.nregions] = (base, length);
                boot.nregions += 1;
            }
            p += u64::from(size) + 4;
        }
    } else if flags & 1 != 0 {
        let upper: u32 = unsafe { rd(info + 8) };
        boot.regions[0] = (0x10_0000, u64::from(upper) * 1024);
        boot.nregions = 1;
    }
    if boot.nregions == 0 {
        return Err("the boot loader gave no memory map");
    }
    Ok(())
}
