//! How many vCPUs the firmware describes: enabled processors in the Intel
//! MP table and in the ACPI MADT.

use super::rd;

/// Number of enabled processors in the Intel MP table, if there is one.
pub(super) fn mp_cpus() -> Option<usize> {
    let ebda = u64::from(unsafe { rd::<u16>(0x40E) }) << 4;
    let mut areas = [(0u64, 0u64); 3];
    if (0x8_0000..0xA_0000).contains(&ebda) {
        areas[0] = (ebda, ebda + 1024);
    }
    areas[1] = (0x9_FC00, 0xA_0000);
    areas[2] = (0xF_0000, 0x10_0000);
    for (start, end) in areas {
        let mut p = start;
        while p + 16 <= end {
            if unsafe { rd::<[u8; 4]>(p) } == *b"_MP_" && checksum(p, 16) {
                return Some(mp_count(p));
            }
            p += 16;
        }
    }
    None
}

/// Number of enabled processors in the ACPI MADT, if there is one. Under
/// QEMU on a slow (emulated ring 0) host SeaBIOS may list only the vCPUs
/// that answered it in time in its MP table; QEMU's own MADT lists them all.
pub(super) fn madt_cpus() -> Option<usize> {
    let rsdp = [(0xE_0000u64, 0x10_0000u64)]
        .into_iter()
        .find_map(|(start, end)| {
            (start..end)
                .step_by(16)
                .find(|&p| unsafe { rd::<[u8; 8]>(p) } == *b"RSD PTR " && checksum(p, 20))
        })?;
    let rsdt = u64::from(unsafe { rd::<u32>(rsdp + 16) });
    if rsdt == 0 || rsdt >= 1 << 32 || unsafe { rd::<[u8; 4]>(rsdt) } != *b"RSDT" {
        return None;
    }
    let len = u64::from(unsafe { rd::<u32>(rsdt + 4) }).min(4096);
    let madt = (36..len)
        .step_by(4)
        .map(|o| u64::from(unsafe { rd::<u32>(rsdt + o) }))
        .find(|&t| t != 0 && unsafe { rd::<[u8; 4]>(t) } == *b"APIC")?;
    let len = u64::from(unsafe { rd::<u32>(madt + 4) }).min(1 << 16);
    let mut p = 44;
    let mut cpus = 0;
    while p + 2 <= len {
        let (kind, elen) = unsafe { (rd::<u8>(madt + p), u64::from(rd::<u8>(madt + p + 1))) };
        if elen < 2 {
            break;
        }
        let enabled = match kind {
            0 => (unsafe { rd::<u32>(madt + p + 4) } & 1) != 0,
            9 => (unsafe { rd::<u32>(madt + p + 8) } & 1) != 0,
            _ => false,
        };
        cpus += usize::from(enabled);
        p += elen;
    }
    (cpus > 0).then_some(cpus)
}

fn checksum(p: u64, len: u64) -> bool {
    (0..len).fold(0u8, |s, i| s.wrapping_add(unsafe { rd::<u8>(p + i) })) == 0
}

fn mp_count(fp: u64) -> usize {
    let table = u64::from(unsafe { rd::<u32>(fp + 4) });
    if table == 0 {
        // A default configuration (spec chapter 5): two processors.
        return 2;
    }
    if unsafe { rd::<[u8; 4]>(table) } != *b"PCMP" {
        return 1;
    }
    let count = unsafe { rd::<u16>(table + 34) };
    let mut p = table + 44;
    let mut cpus = 0;
    for _ in 0..count {
        match unsafe { rd::<u8>(p) } {
            0 => {
                if unsafe { rd::<u8>(p + 3) } & 1 != 0 {
                    cpus += 1;
                }
                p += 20;
            }
            1..=4 => p += 8,
            _ => break,
        }
    }
    cpus.max(1)
}
