//! Fast zero-page detection.

/// Whether every byte of `page` is zero. Works on any length; reads 256
/// bytes at a time as u128 words (vectorized by the compiler) and stops at
/// the first block holding a non-zero byte, so non-zero pages cost little.
pub fn is_zero_page(page: &[u8]) -> bool {
    const BLOCK: usize = 256;
    let mut blocks = page.chunks_exact(BLOCK);
    for block in &mut blocks {
        let mut acc = 0u128;
        for word in block.chunks_exact(16) {
            acc |= u128::from_ne_bytes(word.try_into().expect("16 bytes"));
        }
        if acc != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_any_nonzero_byte() {
        for len in [0usize, 1, 15, 16, 255, 256, 257, 4096] {
            let mut page = vec![0u8; len];
            assert!(is_zero_page(&page), "len {len}");
            for i in 0..len {
                page[i] = 0x80;
                assert!(!is_zero_page(&page), "len {len} byte {i}");
                page[i] = 0;
            }
        }
    }
}
