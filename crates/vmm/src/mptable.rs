//! Intel MultiProcessor table (spec 1.4), so a guest can count its vCPUs
//! the way it would on a PC (SeaBIOS provides the same under QEMU).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::Error;
use crate::multiboot::EBDA_START;

/// Guest-physical address of the IOAPIC and LAPIC (KVM's defaults).
pub const IOAPIC_ADDR: u32 = 0xFEC0_0000;
pub const LAPIC_ADDR: u32 = 0xFEE0_0000;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// Builds the floating pointer and configuration table for `vcpus` CPUs.
pub fn build(vcpus: u32) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut count = 0u16;
    for id in 0..vcpus {
        let mut e = [0u8; 20];
        e[0] = 0; // processor
        e[1] = id as u8;
        e[2] = 0x14; // LAPIC version
        e[3] = 1 | if id == 0 { 2 } else { 0 }; // enabled, BSP
        e[4..8].copy_from_slice(&0x600u32.to_le_bytes()); // family 6
        e[8..12].copy_from_slice(&0x201u32.to_le_bytes()); // FPU, APIC
        entries.extend_from_slice(&e);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    count += 1;
    let ioapic_id = vcpus as u8;
    entries.extend_from_slice(&[2, ioapic_id, 0x11, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for irq in 0..16u8 {
        let kind = if irq == 0 { 3 } else { 0 }; // ExtINT for the PIC cascade
        entries.extend_from_slice(&[3, kind, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]); // LINT0 ExtINT
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]); // LINT1 NMI
    count += 2;

    let table_addr = EBDA_START as u32 + 16;
    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.push(4); // spec 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"FERRY   ");
    table.extend_from_slice(b"FERRYVM     ");
    table.extend_from_slice(&0u32.to_le_bytes());
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    table.extend_from_slice(&[0, 0, 0, 0]);
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = [0u8; 16];
    fp[..4].copy_from_slice(b"_MP_");
    fp[4..8].copy_from_slice(&table_addr.to_le_bytes());
    fp[8] = 1;
    fp[9] = 4;
    fp[10] = checksum(&fp);
    let mut out = fp.to_vec();
    out.extend_from_slice(&table);
    out
}

/// Writes the table at the start of the reserved area below 640 KiB.
pub fn write(mem: &GuestMemoryMmap, vcpus: u32) -> Result<(), Error> {
    let t = build(vcpus);
    if t.len() as u64 > 0xa_0000 - EBDA_START {
        return Err(Error::MpTableFull { vcpus });
    }
    mem.write_slice(&t, GuestAddress(EBDA_START))
        .map_err(Error::WriteMpTable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts_are_right() {
        let t = build(2);
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(t[..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let table = &t[16..];
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(table[..len].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let count = u16::from_le_bytes([table[34], table[35]]);
        assert_eq!(count, 2 + 1 + 1 + 16 + 2);
        assert_eq!(table[44], 0);
        assert_eq!(table[44 + 20], 0);
        assert_eq!(table[44 + 40], 1); // bus entry follows the processors
    }
}
