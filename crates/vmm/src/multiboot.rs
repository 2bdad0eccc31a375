//! Multiboot v1 loader: the same kernel files QEMU's `-kernel` boots.

use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use crate::memory::{HIGH_RAM_START, MMIO_HOLE_START};

const MAGIC: u32 = 0x1BAD_B002;
/// EAX at entry, telling the kernel a Multiboot loader started it.
pub const BOOT_MAGIC: u32 = 0x2BAD_B002;
const FLAG_PAGE_ALIGN: u32 = 1 << 0;
const FLAG_MEMORY_INFO: u32 = 1 << 1;
const FLAG_VIDEO: u32 = 1 << 2;
const FLAG_AOUT_KLUDGE: u32 = 1 << 16;
/// Where the boot information block goes (below the kernel, above the
/// guest's reserved pages at 0x6000-0x8fff).
pub const MBI_ADDR: u64 = 0x9000;
const MMAP_ADDR: u64 = MBI_ADDR + 0x80;
const CMDLINE_ADDR: u64 = MBI_ADDR + 0x200;
/// Longest command line accepted (it must fit below 0xa000).
pub const MAX_CMDLINE: usize = 0xa000 - 0x9200 - 1;
/// Lowest address a kernel may load at.
pub const MIN_LOAD_ADDR: u64 = 0x10_0000;
/// Start of the reserved area that holds the MP table, up to 1 MiB.
pub const EBDA_START: u64 = 0x9_fc00;

/// Why a kernel image cannot be booted.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("not a Multiboot v1 kernel (no valid header in its first 8 KiB)")]
    NotMultiboot,
    #[error("Multiboot header is truncated")]
    HeaderTruncated,
    #[error("Multiboot header_addr {header_addr:#x} does not fit load_addr {load_addr:#x}")]
    HeaderAddress { header_addr: u64, load_addr: u64 },
    #[error("load_end_addr {0:#x} is below load_addr")]
    LoadEndBelowStart(u64),
    #[error("bss_end_addr {0:#x} is below load_addr")]
    BssEndBelowStart(u64),
    #[error("kernel file is truncated: needs {needed} bytes, has {len}")]
    FileTruncated { needed: u64, len: usize },
    #[error("bad ELF kernel: {0}")]
    Elf(ElfError),
    #[error("the kernel requires a video mode; Ferry has no display")]
    VideoMode,
    #[error("the kernel requires Multiboot features {0:#x} that Ferry does not provide")]
    UnsupportedFeatures(u32),
    #[error("kernel wants to load at {0:#x}, below 1 MiB")]
    BelowOneMib(u64),
    #[error("kernel needs memory up to {end:#x} but the guest has RAM only up to {ram_end:#x}")]
    OutOfRam { end: u64, ram_end: u64 },
    #[error("command line is {0} bytes; the limit is {MAX_CMDLINE}")]
    CmdlineTooLong(usize),
    #[error("cannot write kernel into memory: {0}")]
    WriteKernel(#[source] GuestMemoryError),
    #[error("cannot write boot info: {0}")]
    WriteBootInfo(#[source] GuestMemoryError),
}

/// What is wrong with an ELF kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("no ELF header, and no a.out-kludge addresses")]
    NoHeader,
    #[error("unknown ELF class")]
    UnknownClass,
    #[error("truncated header")]
    TruncatedHeader,
    #[error("entry point above 4 GiB")]
    EntryAbove4Gib,
    #[error("program headers run past the end of the file")]
    ProgramHeadersPastEnd,
    #[error("segment runs past the end of the file")]
    SegmentPastEnd,
    #[error("no loadable segments")]
    NoLoadableSegments,
}

/// Where a loaded kernel starts.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    pub entry: u32,
    pub mbi: u32,
    pub end: u64,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

/// Finds and checks the Multiboot header; returns (offset, flags).
fn find_header(image: &[u8]) -> Result<(usize, u32), KernelError> {
    let limit = image.len().min(8192);
    let mut off = 0;
    while off + 12 <= limit {
        if u32_at(image, off) == MAGIC {
            let flags = u32_at(image, off + 4);
            let sum = MAGIC
                .wrapping_add(flags)
                .wrapping_add(u32_at(image, off + 8));
            if sum == 0 {
                return Ok((off, flags));
            }
        }
        off += 4;
    }
    Err(KernelError::NotMultiboot)
}

/// A load segment: file bytes placed at a guest address, then zero-filled to `mem_len`.
struct Segment<'a> {
    addr: u64,
    data: &'a [u8],
    mem_len: u64,
}

fn kludge_segments(image: &[u8], hdr: usize) -> Result<(Vec<Segment<'_>>, u32), KernelError> {
    if hdr + 32 > image.len() {
        return Err(KernelError::HeaderTruncated);
    }
    let header_addr = u32_at(image, hdr + 12) as u64;
    let load_addr = u32_at(image, hdr + 16) as u64;
    let load_end = u32_at(image, hdr + 20) as u64;
    let bss_end = u32_at(image, hdr + 24) as u64;
    let entry = u32_at(image, hdr + 28);
    if header_addr < load_addr || header_addr - load_addr > hdr as u64 {
        return Err(KernelError::HeaderAddress {
            header_addr,
            load_addr,
        });
    }
    let file_start = hdr as u64 - (header_addr - load_addr);
    let file_len = if load_end == 0 {
        image.len() as u64 - file_start
    } else {
        load_end
            .checked_sub(load_addr)
            .ok_or(KernelError::LoadEndBelowStart(load_end))?
    };
    if file_start + file_len > image.len() as u64 {
        return Err(KernelError::FileTruncated {
            needed: file_start + file_len,
            len: image.len(),
        });
    }
    let mem_len = if bss_end == 0 {
        file_len
    } else {
        bss_end
            .checked_sub(load_addr)
            .ok_or(KernelError::BssEndBelowStart(bss_end))?
    }
    .max(file_len);
    let data = &image[file_start as usize..(file_start + file_len) as usize];
    Ok((
        vec![Segment {
            addr: load_addr,
            data,
            mem_len,
        }],
        entry,
    ))
}

fn elf_segments(image: &[u8]) -> Result<(Vec<Segment<'_>>, u32), KernelError> {
    let bad = KernelError::Elf;
    if image.len() < 52 || &image[..4] != b"\x7fELF" {
        return Err(bad(ElfError::NoHeader));
    }
    let is64 = match image[4] {
        1 => false,
        2 => true,
        _ => return Err(bad(ElfError::UnknownClass)),
    };
    let u16_at = |o: usize| u16::from_le_bytes([image[o], image[o + 1]]);
    let u64_at = |o: usize| u64::from_le_bytes(image[o..o + 8].try_into().unwrap());
    let (entry, phoff, phentsize, phnum) = if is64 {
        if image.len() < 64 {
            return Err(bad(ElfError::TruncatedHeader));
        }
        (u64_at(24), u64_at(32), u16_at(54), u16_at(56))
    } else {
        (
            u32_at(image, 24) as u64,
            u32_at(image, 28) as u64,
            u16_at(42),
            u16_at(44),
        )
    };
    let entry = u32::try_from(entry).map_err(|_| bad(ElfError::EntryAbove4Gib))?;
    let mut segs = Vec::new();
    for i in 0..phnum as u64 {
        let o = (phoff + i * phentsize as u64) as usize;
        if o + phentsize as usize > image.len() {
            return Err(bad(ElfError::ProgramHeadersPastEnd));
        }
        let (ty, off, paddr, filesz, memsz) = if is64 {
            (
                u32_at(image, o),
                u64_at(o + 8),
                u64_at(o + 24),
                u64_at(o + 32),
                u64_at(o + 40),
            )
        } else {
            (
                u32_at(image, o),
                u32_at(image, o + 4) as u64,
                u32_at(image, o + 12) as u64,
                u32_at(image, o + 16) as u64,
                u32_at(image, o + 20) as u64,
            )
        };
        if ty != 1 || memsz == 0 {
            continue;
        }
        if off
            .checked_add(filesz)
            .is_none_or(|e| e > image.len() as u64)
        {
            return Err(bad(ElfError::SegmentPastEnd));
        }
        segs.push(Segment {
            addr: paddr,
            data: &image[off as usize..(off + filesz) as usize],
            mem_len: memsz.max(filesz),
        });
    }
    if segs.is_empty() {
        return Err(bad(ElfError::NoLoadableSegments));
    }
    Ok((segs, entry))
}

/// Loads `image` into `mem`, writes the boot information (memory map and
/// command line) and returns where to start.
pub fn load(
    mem: &GuestMemoryMmap,
    memory_bytes: u64,
    image: &[u8],
    cmdline: &str,
) -> Result<LoadedKernel, KernelError> {
    let (hdr, flags) = find_header(image)?;
    let required = flags & 0xffff;
    let unsupported = required & !(FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO);
    if unsupported & FLAG_VIDEO != 0 {
        return Err(KernelError::VideoMode);
    }
    if unsupported != 0 {
        return Err(KernelError::UnsupportedFeatures(unsupported));
    }
    let (segments, entry) = if flags & FLAG_AOUT_KLUDGE != 0 {
        kludge_segments(image, hdr)?
    } else {
        elf_segments(image)?
    };
    let low_end = memory_bytes.min(MMIO_HOLE_START);
    let mut end = 0;
    for s in &segments {
        let seg_end = s.addr + s.mem_len;
        if s.addr < MIN_LOAD_ADDR {
            return Err(KernelError::BelowOneMib(s.addr));
        }
        if seg_end > low_end {
            return Err(KernelError::OutOfRam {
                end: seg_end,
                ram_end: low_end,
            });
        }
        mem.write_slice(s.data, GuestAddress(s.addr))
            .map_err(KernelError::WriteKernel)?;
        end = end.max(seg_end);
    }
    if cmdline.len() > MAX_CMDLINE {
        return Err(KernelError::CmdlineTooLong(cmdline.len()));
    }
    write_boot_info(mem, memory_bytes, cmdline)?;
    Ok(LoadedKernel {
        entry,
        mbi: MBI_ADDR as u32,
        end,
    })
}

/// The memory map the guest is told about: (base, length, type).
pub fn memory_map(memory_bytes: u64) -> Vec<(u64, u64, u32)> {
    let low_end = memory_bytes.min(MMIO_HOLE_START);
    let mut map = vec![
        (0, EBDA_START, 1),
        (EBDA_START, 0x10_0000 - EBDA_START, 2),
        (0x10_0000, low_end - 0x10_0000, 1),
    ];
    if memory_bytes > MMIO_HOLE_START {
        map.push((HIGH_RAM_START, memory_bytes - MMIO_HOLE_START, 1));
    }
    map
}

fn write_boot_info(
    mem: &GuestMemoryMmap,
    memory_bytes: u64,
    cmdline: &str,
) -> Result<(), KernelError> {
    let io = KernelError::WriteBootInfo;
    let mut mmap = Vec::new();
    for (base, len, ty) in memory_map(memory_bytes) {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&base.to_le_bytes());
        mmap.extend_from_slice(&len.to_le_bytes());
        mmap.extend_from_slice(&ty.to_le_bytes());
    }
    let mut info = [0u8; 0x80];
    let put = |b: &mut [u8], off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put(&mut info, 0, 1 | (1 << 2) | (1 << 6));
    put(&mut info, 4, (EBDA_START / 1024) as u32);
    let upper_kib = (memory_bytes.min(MMIO_HOLE_START) - 0x10_0000) / 1024;
    put(&mut info, 8, upper_kib.min(u32::MAX as u64) as u32);
    put(&mut info, 16, CMDLINE_ADDR as u32);
    put(&mut info, 44, mmap.len() as u32);
    put(&mut info, 48, MMAP_ADDR as u32);
    mem.write_slice(&info, GuestAddress(MBI_ADDR)).map_err(io)?;
    mem.write_slice(&mmap, GuestAddress(MMAP_ADDR))
        .map_err(io)?;
    let mut c = cmdline.as_bytes().to_vec();
    c.push(0);
    mem.write_slice(&c, GuestAddress(CMDLINE_ADDR))
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory;
    use vm_memory::GuestMemoryBackend;

    fn kludge_image(load: u32, file_len: u32, bss_end: u32, entry: u32) -> Vec<u8> {
        let mut img = vec![0u8; file_len as usize];
        let flags = FLAG_AOUT_KLUDGE | FLAG_MEMORY_INFO;
        let words = [
            MAGIC,
            flags,
            0u32.wrapping_sub(MAGIC.wrapping_add(flags)),
            load,
            load,
            load + file_len,
            bss_end,
            entry,
        ];
        for (i, w) in words.iter().enumerate() {
            img[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        img[40] = 0xAB;
        img
    }

    #[test]
    fn loads_kludge_kernel_and_boot_info() {
        let mem = memory::allocate(&[(0, 4 << 20)]).unwrap();
        let img = kludge_image(0x10_0000, 4096, 0x10_3000, 0x10_0020);
        let l = load(&mem, 4 << 20, &img, "ws=1M").unwrap();
        assert_eq!(l.entry, 0x10_0020);
        assert_eq!(l.end, 0x10_3000);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x10_0028)).unwrap(), 0xAB);
        let flags: u32 = mem.read_obj(GuestAddress(MBI_ADDR)).unwrap();
        assert_eq!(flags, 1 | 4 | 64);
        let mut c = [0u8; 6];
        mem.read_slice(&mut c, GuestAddress(CMDLINE_ADDR)).unwrap();
        assert_eq!(&c, b"ws=1M\0");
        assert!(mem.address_in_range(GuestAddress(0x10_2fff)));
    }

    #[test]
    fn refuses_non_multiboot_and_too_small_memory() {
        let mem = memory::allocate(&[(0, 2 << 20)]).unwrap();
        let e = load(&mem, 2 << 20, b"#!/bin/sh\necho hi\n", "").unwrap_err();
        assert!(e.to_string().contains("not a Multiboot"), "{e}");
        let img = kludge_image(0x10_0000, 4096, 0x40_0000, 0x10_0000);
        let e = load(&mem, 2 << 20, &img, "").unwrap_err();
        assert!(e.to_string().contains("RAM only up to"), "{e}");
        let img = kludge_image(0x10_0000, 64, 0, 0x10_0000);
        let e = load(&mem, 2 << 20, &img[..40], "").unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn refuses_video_mode() {
        let mut img = kludge_image(0x10_0000, 4096, 0, 0x10_0000);
        let flags = FLAG_AOUT_KLUDGE | FLAG_VIDEO;
        img[4..8].copy_from_slice(&flags.to_le_bytes());
        img[8..12].copy_from_slice(&0u32.wrapping_sub(MAGIC.wrapping_add(flags)).to_le_bytes());
        let mem = memory::allocate(&[(0, 4 << 20)]).unwrap();
        let e = load(&mem, 4 << 20, &img, "").unwrap_err();
        assert!(e.to_string().contains("video"), "{e}");
    }
}
