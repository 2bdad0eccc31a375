//! Ferry's guest programs and the host side of their contract.
//!
//! `build.rs` compiles the `no_std` programs in `programs/` into Multiboot v1
//! ELF images (see docs/GUESTS.md); this crate embeds them ([`image`],
//! [`NAMES`]) and parses what they print ([`output`], [`stamp`]) and
//! publish in their status page ([`status`]); [`sampler`] measures their
//! downtime across a migration from that page. The parameter parser
//! ([`params`]) and the content pattern ([`pattern`]) are the very code the
//! guests run, compiled for the host.

#[path = "../programs/common/hist.rs"]
pub mod hist;
#[path = "../programs/common/params.rs"]
pub mod params;
#[path = "../programs/common/pattern.rs"]
pub mod pattern;
#[path = "../programs/common/zipf.rs"]
pub mod zipf;

pub mod output;
pub mod sampler;
pub mod stamp;
pub mod status;

pub use output::{Line, parse_line};

/// Names of the guest programs, as accepted by [`image`].
pub const NAMES: &[&str] = &["dirtier", "idle", "kvstore"];

static DIRTIER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dirtier.elf"));
static IDLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/idle.elf"));
static KVSTORE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kvstore.elf"));

/// The ELF image of guest program `name` (one of [`NAMES`]).
pub fn image(name: &str) -> Option<&'static [u8]> {
    match name {
        "dirtier" => Some(DIRTIER),
        "idle" => Some(IDLE),
        "kvstore" => Some(KVSTORE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_a_multiboot_image() {
        for name in NAMES {
            let img = image(name).unwrap();
            assert_eq!(&img[..4], b"\x7fELF", "{name}");
            // Multiboot v1 header with the a.out kludge in the first 8 KiB.
            let off = (0..8192 - 12)
                .step_by(4)
                .find(|&o| img[o..o + 4] == 0x1BAD_B002u32.to_le_bytes())
                .unwrap_or_else(|| panic!("{name}: no multiboot header"));
            let flags = u32::from_le_bytes(img[off + 4..off + 8].try_into().unwrap());
            assert_eq!(flags & (1 << 16), 1 << 16, "{name}: no a.out kludge");
            assert_eq!(flags & 2, 2, "{name}: memory map not requested");
            let load = u32::from_le_bytes(img[off + 16..off + 20].try_into().unwrap());
            assert_eq!(load, 0x10_0000);
        }
        assert!(image("nope").is_none());
    }
}
